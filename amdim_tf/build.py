"""Model construction from a config: encoder, objective, model and optimizer (no data, no flags)."""

from amdim_tf.encoder import AMDIMEncoder
from amdim_tf.model import SelfSupervisedModel
from amdim_tf.objectives import AMDIMObjective
from amdim_tf.optim import make_optimizer


def build_encoder(model_cfg):
    return AMDIMEncoder(model_cfg.image_size, model_cfg.ndf, model_cfg.n_rkhs, model_cfg.n_depth,
                        model_cfg.use_bn, model_cfg.synchronized_bn, name="encoder")


def build_objective(config):
    if config.method != "amdim":
        raise ValueError(f"Unknown config.method={config.method!r}; available: 'amdim'.")
    return AMDIMObjective(config.loss.tclip, config.loss.reg_coeff)


def build_model(config, steps_per_epoch, num_classes):
    """The compiled SelfSupervisedModel, with every variable created (call inside a strategy scope)."""
    if config.data.image_size != config.model.image_size:
        raise ValueError(
            f"config.data.image_size={config.data.image_size} differs from "
            f"config.model.image_size={config.model.image_size}; set both to the same value.")
    model = SelfSupervisedModel(build_encoder(config.model), build_objective(config), num_classes,
                                weight_decay=config.optim.weight_decay, seed=config.seed)
    model.build()
    # XLA is off on purpose: measured slower than the default TF kernels on CPU.
    model.compile(optimizer=make_optimizer(config.optim, steps_per_epoch), jit_compile=False)
    if model.adversary_variables:
        model.adversary_optimizer = make_optimizer(config.optim, steps_per_epoch)
        model.adversary_optimizer.build(model.adversary_variables)
    adversary_ids = {id(v) for v in model.adversary_variables}
    model.optimizer.build([v for v in model.trainable_variables if id(v) not in adversary_ids])
    return model
