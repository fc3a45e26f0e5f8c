"""Online evaluation probes (the official `Evaluator` / `MLPClassifier`).

A linear and an MLP classifier trained during pretraining on the flattened r1
of both views. Their input goes through `stop_gradient` in the model, so the
probes measure the representation without ever teaching the encoder.
"""

import keras

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


def linear_probe(in_dim, num_classes, name="linear_probe"):
    """Dense(num_classes) on [N, in_dim] features."""
    return keras.Sequential(
        [keras.Input((in_dim,)), _dense(num_classes, in_dim, name="logits")], name=name
    )


def mlp_probe(in_dim, num_classes, hidden=1024, dropout=0.2, name="mlp_probe"):
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
