"""Self-supervised objectives plugged into `amdim_tf.model.SelfSupervisedModel`.

An objective is a plain object with `metric_names` (tuple of "group/name" log
keys besides "loss/total") and `__call__(feats1, feats2, seed_generator) ->
dict` that returns float32 scalars: "total" plus one entry per metric name.
"""

from amdim_tf.objectives.amdim import AMDIMObjective

__all__ = ["AMDIMObjective"]
