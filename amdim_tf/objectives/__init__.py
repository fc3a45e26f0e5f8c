"""Self-supervised objectives plugged into `amdim_tf.model.SelfSupervisedModel`.

An objective is a plain object with `metric_names` (tuple of "group/name" log
keys besides "loss/total") and `__call__(feats1, feats2, seed_generator) ->
dict` that returns float32 scalars: "total" plus one entry per metric name.
Objectives with trainable critics (DIM, CPC) are `keras.layers.Layer`s whose
weights are created at construction, so the model tracks and optimises them;
DIM's prior discriminator is exposed as `adversary_variables` /
`adversary_loss` and trained by the model's second optimizer.
"""

from amdim_tf.objectives.amdim import AMDIMObjective
from amdim_tf.objectives.cpc import CPCObjective
from amdim_tf.objectives.dim import DIMObjective

__all__ = ["AMDIMObjective", "CPCObjective", "DIMObjective"]
