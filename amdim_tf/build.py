"""From a run config to a compiled model: encoder, objective, probes, optimizer(s), precision.

Library code: takes a ConfigDict, reads no flags, touches no data.
"""

import keras

from amdim_tf.encoders import build_encoder
from amdim_tf.model import SelfSupervisedModel
from amdim_tf.objectives import build_objective
from amdim_tf.optim import make_optimizer

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def build_model(config, steps_per_epoch: int, num_classes: int) -> SelfSupervisedModel:
    """The compiled SelfSupervisedModel, with every variable created (call inside a strategy scope).

    `config.precision` is the Keras dtype policy of every layer built here; the global
    policy is restored afterwards, so it never leaks into later models (tests, tools).
    Variables stay float32 under the mixed policies; the losses compute in float32.
    """
    if config.data.image_size != config.model.image_size:
        raise ValueError(
            f"config.data.image_size={config.data.image_size} differs from "
            f"config.model.image_size={config.model.image_size}; set both to the same value."
        )
    precision = config.precision
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown config.precision={precision!r}; available: {PRECISIONS}.")
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        # Critics (DIM, CPC) create their weights at construction, before model.build()
        # builds the encoder: seeded runs depend on that order of random draws.
        encoder = build_encoder(config)
        objective = build_objective(config, encoder)
        model = SelfSupervisedModel(
            encoder,
            objective,
            num_classes,
            weight_decay=config.optim.weight_decay,
            seed=config.seed,
        )
        model.build()

        def optimizer_for_precision():
            optimizer = make_optimizer(config.optim, steps_per_epoch)
            if precision == "mixed_float16":
                # float16's range needs dynamic loss scaling; train_step calls scale_loss
                # and the wrapper's apply_gradients unscales (and skips non-finite steps).
                # Each optimizer gets its own scale: their losses and gradients differ.
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            return optimizer

        # XLA off by default: measured slower than TF's kernels on this CPU (Keras's
        # "auto" turns it on for one GPU, and off under tf.distribute).
        model.compile(
            optimizer=optimizer_for_precision(),
            jit_compile=bool(config.jit_compile),
            steps_per_execution=int(config.train.steps_per_execution),
        )
        if model.adversary_variables:
            model.adversary_optimizer = optimizer_for_precision()
            model.adversary_optimizer.build(model.adversary_variables)
        adversary_ids = {id(v) for v in model.adversary_variables}
        model.optimizer.build([v for v in model.trainable_variables if id(v) not in adversary_ids])
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return model
