"""Optimiser and learning-rate schedule of the paper (§4, official `task_self_supervised.py`).

Adam (lr 2e-4, betas 0.8/0.999, eps 1e-8) with a linear warm-up over the first
500 updates and a x0.2 step decay at given epochs; or (optim.schedule="cosine", for
short budgets) the warm-up then a cosine decay to zero at the run's last step. The weight decay of the
official code is PyTorch Adam's coupled L2 (added to the gradient before the
moments), not AdamW's decoupled decay, so the model adds it to the gradients
itself (`SelfSupervisedModel.train_step`); Keras' `weight_decay` would be AdamW.
Derived values (decay boundaries in steps) are computed here from the epoch
length, never stored in configs.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="amdim_tf")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base_lr * min(1, (step + 1) / warmup_steps) * factor ** (#boundaries <= step).

    The official warm-up sets lr = base * (updates + 1) / 500 before each of
    the first 500 updates; Keras passes the 0-based update count as `step`.
    """

    def __init__(self, base_lr, warmup_steps=500, boundaries=(), factor=0.2):
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = tuple(int(b) for b in boundaries)
        self.factor = float(factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = ops.minimum(1.0, (step + 1.0) / max(self.warmup_steps, 1))
        n_decays = (
            sum(ops.cast(step >= b, "float32") for b in self.boundaries) if self.boundaries else 0.0
        )
        return self.base_lr * warm * ops.power(self.factor, n_decays)

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "boundaries": list(self.boundaries),
            "factor": self.factor,
        }


def make_schedule(optim, steps_per_epoch: int, total_steps: int):
    """The learning rate as a function of the update count, from the `optim` config section."""
    if optim.schedule == "cosine":
        warmup = min(int(optim.warmup_steps), max(int(total_steps) - 1, 0))
        return keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=max(int(total_steps) - warmup, 1),
            warmup_target=float(optim.lr),
            warmup_steps=warmup,
        )
    boundaries = [int(e) * int(steps_per_epoch) for e in optim.decay_epochs]
    return WarmupStepDecay(optim.lr, optim.warmup_steps, boundaries, optim.decay_factor)


def make_optimizer(optim, steps_per_epoch: int, total_steps: int):
    """Adam with the schedule of the `optim` config section over a run of `total_steps`."""
    schedule = make_schedule(optim, steps_per_epoch, total_steps)
    return keras.optimizers.Adam(
        learning_rate=schedule, beta_1=optim.beta_1, beta_2=optim.beta_2, epsilon=optim.epsilon
    )
