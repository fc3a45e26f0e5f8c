"""Model construction from a config: encoder, objective, model and optimizer (no data, no flags)."""

import keras

from amdim_tf.cpc_encoder import CPCEncoder, patch_geometry
from amdim_tf.dim_encoder import DIMEncoder, dim_local_shape
from amdim_tf.encoder import AMDIMEncoder
from amdim_tf.model import SelfSupervisedModel
from amdim_tf.objectives import AMDIMObjective, CPCObjective, DIMObjective
from amdim_tf.optim import make_optimizer


METHODS = ("amdim", "dim", "cpc")


def build_encoder(config):
    """The encoder of `config.method` (an unbuilt keras.Model with image_size and n_rkhs)."""
    model_cfg, method = config.model, config.method
    if method == "amdim" or (method == "dim" and config.dim.encoder == "amdim"):
        return AMDIMEncoder(model_cfg.image_size, model_cfg.ndf, model_cfg.n_rkhs, model_cfg.n_depth,
                            model_cfg.use_bn, model_cfg.synchronized_bn, name="encoder")
    if method == "dim":
        if config.dim.encoder != "dim":
            raise ValueError(f"Unknown config.dim.encoder={config.dim.encoder!r}; available: 'dim', 'amdim'.")
        return DIMEncoder(model_cfg.image_size, model_cfg.ndf, model_cfg.n_rkhs, config.dim.fc_units,
                          config.dim.local_layer, model_cfg.synchronized_bn, name="encoder")
    if method == "cpc":
        return CPCEncoder(model_cfg.image_size, model_cfg.ndf, model_cfg.n_rkhs, config.cpc.patch_size,
                          config.cpc.patch_stride, config.cpc.context_blocks, name="encoder")
    raise ValueError(f"Unknown config.method={method!r}; available: {METHODS}.")


def _amdim_feature_shape(model_cfg, key):
    """(side, side, channels) of an AMDIMEncoder map, for DIM on AMDIM's encoder."""
    side = {"r7": 7, "h7": 7, "r5": 5, "h5": 5}.get(key)
    if side is None:
        raise ValueError(f"config.dim.local_feature={key!r} is not a local map of AMDIMEncoder; "
                         "use 'r7', 'h7', 'r5' or 'h5'.")
    trunk_width = (4 if model_cfg.image_size == 32 else 8) * model_cfg.ndf   # AMDIMEncoder.width7
    return (side, side, model_cfg.n_rkhs if key.startswith("r") else trunk_width)


def build_objective(config):
    if config.method == "amdim":
        return AMDIMObjective(config.loss.tclip, config.loss.reg_coeff)
    if config.method == "dim":
        d = config.dim
        if d.encoder == "amdim":
            local_key = d.local_feature or "r7"
            local_shape = _amdim_feature_shape(config.model, local_key)
        else:
            local_key = "local"
            local_shape = dim_local_shape(config.model.image_size, config.model.ndf, d.local_layer)
        return DIMObjective(config.model.n_rkhs, local_shape, d.estimator, d.alpha, d.beta, d.gamma,
                            d.critic_units, d.summary_width, tuple(d.disc_hidden), d.gp_coeff,
                            global_key="r1", local_key=local_key, cross_view=d.cross_view,
                            name="objective")
    if config.method == "cpc":
        c = config.cpc
        _, _, grid = patch_geometry(config.model.image_size, c.patch_size, c.patch_stride)
        return CPCObjective(config.model.n_rkhs, grid, c.min_offset, c.max_offset,
                            name="objective")
    raise ValueError(f"Unknown config.method={config.method!r}; available: {METHODS}.")


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def build_model(config, steps_per_epoch, num_classes):
    """The compiled SelfSupervisedModel, with every variable created (call inside a strategy scope).

    `config.precision` is the Keras dtype policy of every layer built here; the global
    policy is restored afterwards, so it never leaks into later models (tests, tools).
    Variables stay float32 under the mixed policies; the losses compute in float32.
    """
    if config.data.image_size != config.model.image_size:
        raise ValueError(
            f"config.data.image_size={config.data.image_size} differs from "
            f"config.model.image_size={config.model.image_size}; set both to the same value.")
    precision = config.get("precision", "float32")
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown config.precision={precision!r}; available: {PRECISIONS}.")
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        model = SelfSupervisedModel(build_encoder(config), build_objective(config), num_classes,
                                    weight_decay=config.optim.weight_decay, seed=config.seed)
        model.build()
        def optimizer_for_precision():
            optimizer = make_optimizer(config.optim, steps_per_epoch)
            if precision == "mixed_float16":
                # float16's range needs dynamic loss scaling; train_step calls scale_loss
                # and the wrapper's apply_gradients unscales (and skips non-finite steps).
                # Each optimizer gets its own scale: their losses and gradients differ.
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            return optimizer

        optimizer = optimizer_for_precision()
        # XLA off by default: measured slower than TF's kernels on this CPU (Keras's
        # "auto" turns it on for one GPU, and off under tf.distribute).
        model.compile(optimizer=optimizer, jit_compile=bool(config.get("jit_compile", False)),
                      steps_per_execution=int(config.train.get("steps_per_execution", 1)))
        if model.adversary_variables:
            model.adversary_optimizer = optimizer_for_precision()
            model.adversary_optimizer.build(model.adversary_variables)
        adversary_ids = {id(v) for v in model.adversary_variables}
        model.optimizer.build([v for v in model.trainable_variables if id(v) not in adversary_ids])
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return model
