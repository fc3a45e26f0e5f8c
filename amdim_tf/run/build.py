"""From a run config to a compiled model: encoder, objective, probes, optimizer(s), precision.

Library code: takes a ConfigDict, reads no flags, touches no data.
"""

import os

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from amdim_tf.config_lib import PRECISIONS
from amdim_tf.errors import UserError
from amdim_tf.methods import build_encoder, build_objective
from amdim_tf.run.model import SelfSupervisedModel
from amdim_tf.run.optim import make_optimizer

# CPU flags (Linux /proc/cpuinfo) of the instructions that make bfloat16 matmuls fast:
# AVX512_BF16 (measured here: a bf16 matmul ~1.8x float32, the train step ~1.5x) and AMX.
_FAST_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags(cpuinfo="/proc/cpuinfo") -> set:
    if not os.path.exists(cpuinfo):
        return set()
    with open(cpuinfo) as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(name: str, cpuinfo: str = "/proc/cpuinfo") -> str:
    """The Keras dtype policy for `config.precision`; "auto" picks one for this machine.

    "auto" is mixed_bfloat16 where the device computes bfloat16 fast: a TPU, an
    NVIDIA GPU of compute capability 8.0 or newer (Ampere, Hopper, ...), or a CPU
    with AVX512_BF16 or AMX; float32 otherwise (mixed_float16 would need loss
    scaling and is left to an explicit choice). Variables stay float32 either way.
    """
    if name not in PRECISIONS:
        raise UserError(f"Unknown config.precision={name!r}; available: {PRECISIONS}.")
    if name != "auto":
        return name
    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [
            tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
            for g in gpus
        ]
        return "mixed_bfloat16" if min(capabilities) >= (8, 0) else "float32"
    if _cpu_flags(cpuinfo) & set(_FAST_BF16_CPU_FLAGS):
        return "mixed_bfloat16"
    return "float32"


def build_model(
    config: ml_collections.ConfigDict, steps_per_epoch: int, num_classes: int
) -> SelfSupervisedModel:
    """The compiled SelfSupervisedModel, with every variable created (call inside a strategy scope).

    `config.precision` ("auto" resolved by `resolve_precision`) is the Keras dtype
    policy of every layer built here; the global
    policy is restored afterwards, so it never leaks into later models (tests, tools).
    Variables stay float32 under the mixed policies; the losses compute in float32.
    """
    if config.data.image_size != config.model.image_size:
        raise UserError(
            f"config.data.image_size={config.data.image_size} differs from "
            f"config.model.image_size={config.model.image_size}; set both to the same value."
        )
    precision = resolve_precision(config.precision)
    if precision != config.precision:
        logging.info("config.precision='auto' is %s on this machine.", precision)
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
            optimizer = make_optimizer(
                config.optim, steps_per_epoch, steps_per_epoch * int(config.train.epochs)
            )
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
        # An objective's auxiliary state (see amdim_tf.methods) has its own optimizer,
        # built before the main one as before, so the order of their slots is unchanged.
        auxiliary = model.auxiliary_variables
        if auxiliary:
            model.auxiliary_optimizer = optimizer_for_precision()
            model.auxiliary_optimizer.build(auxiliary)
        auxiliary_ids = {id(v) for v in auxiliary}
        model.optimizer.build([v for v in model.trainable_variables if id(v) not in auxiliary_ids])
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return model
