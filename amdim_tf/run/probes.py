"""Online evaluation probes (the official `Evaluator` / `MLPClassifier`) and their loss.

A linear and an MLP classifier trained during pretraining on the flattened global
feature (`methods.features.GLOBAL`, r1) of both views, with the official
`loss_xent`. Their input goes through `stop_gradient` in the model, so the probes
measure the representation without ever teaching the encoder. Probes belong to
the run's model, not to a method: every method's encoder is probed the same way.
"""

import keras
import tensorflow as tf

from amdim_tf.methods.infonce import tanh_clip
from amdim_tf.methods.nn import (
    BN_EPSILON,
    BN_MOMENTUM,
    TORCH_DEFAULT_KERNEL_INIT,
    torch_default_bias_init,
)


def _dense(units, fan_in, use_bias=True, name=None):
    return keras.layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
        bias_initializer=torch_default_bias_init(fan_in),
        name=name,
    )


def linear_probe(in_dim: int, num_classes: int, name: str = "linear_probe") -> keras.Sequential:
    """Dense(num_classes) on [N, in_dim] features."""
    return keras.Sequential(
        [keras.Input((in_dim,)), _dense(num_classes, in_dim, name="logits")], name=name
    )


def mlp_probe(
    in_dim: int, num_classes: int, hidden: int = 1024, dropout: float = 0.2, name: str = "mlp_probe"
) -> keras.Sequential:
    """Dropout -> Dense(hidden, no bias) -> BN -> ReLU -> Dropout -> Dense(num_classes)."""
    return keras.Sequential(
        [
            keras.Input((in_dim,)),
            keras.layers.Dropout(dropout),
            _dense(hidden, in_dim, use_bias=False, name="hidden"),
            keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="bn"),
            keras.layers.ReLU(),
            keras.layers.Dropout(dropout),
            _dense(num_classes, hidden, name="logits"),
        ],
        name=name,
    )


def probe_xent(
    logits: tf.Tensor, labels: tf.Tensor, clip: float = 10.0, reg_coeff: float = 1e-3
) -> tf.Tensor:
    """Cross-entropy of an online probe, as the official `loss_xent`.

    CE(tanh_clip(logits, 10), labels) + 1e-3 * mean(logits^2), averaged over the
    labelled rows only: labels < 0 mark unlabelled images (e.g. STL-10's
    unlabeled split), which must neither teach nor be scored.

    Args:
        logits: [N, K]; labels: [N] int (-1 = unlabelled).
    Returns:
        float32 scalar (0 if no row is labelled).
    """
    logits = tf.cast(logits, tf.float32)  # [N, K]
    labels = tf.cast(labels, tf.int32)  # [N]
    valid = tf.cast(labels >= 0, tf.float32)  # [N]
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.maximum(labels, 0), logits=tanh_clip(logits, clip)
    )  # [N]
    n_valid = tf.maximum(tf.reduce_sum(valid), 1.0)  # []
    reg = reg_coeff * tf.reduce_mean(tf.square(logits))  # []
    return tf.reduce_sum(xent * valid) / n_valid + reg  # []
