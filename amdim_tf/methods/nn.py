"""Neural-network plumbing shared by the three encoders and the critics.

What every network here needs and no single method owns: PyTorch's default
initialisation (the official AMDIM, DIM and CPC codes are PyTorch, and matching
their init matches their training dynamics), one identity-like init for linear
shortcuts, PyTorch-style BatchNorm, and the checks and build helpers of the
encoders' `call(images) -> dict` contract. Imports nothing of ours.
"""

import math

import keras
from keras import ops

from amdim_tf.errors import UserError

# PyTorch's nn.Conv2d / nn.Linear default: kaiming_uniform_(a=sqrt(5)),
# i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
TORCH_DEFAULT_KERNEL_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}
# PyTorch BatchNorm2d: momentum 0.1 (Keras counts the other way), eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def torch_default_bias_init(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default bias init for a layer with `fan_in` inputs."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


@keras.saving.register_keras_serializable(package="amdim_tf")
class NoisyIdentity(keras.initializers.Initializer):
    """U(-0.01, 0.01) with ones on the diagonal of the last two axes.

    The official codes start linear shortcuts (AMDIM's `FakeRKHSConvNet`, DIM's
    MI networks) near the identity, so a critic head first passes its input
    through almost unchanged. Only meaningful when outputs >= inputs.
    """

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        noise = keras.random.uniform(shape, -0.01, 0.01, dtype=dtype, seed=self.seed)
        eye = ops.eye(shape[-2], shape[-1], dtype=noise.dtype)  # [in, out]
        eye = ops.reshape(eye, [1] * (len(shape) - 2) + [shape[-2], shape[-1]])
        return ops.where(eye > 0, eye * ops.ones_like(noise), noise)

    def get_config(self):
        return {"seed": self.seed}


def shortcut_init(n_in: int, units: int):
    """Identity-like when the output is at least as wide as the input, else PyTorch's default."""
    return NoisyIdentity() if units >= n_in else TORCH_DEFAULT_KERNEL_INIT


def batch_norm(name=None, synchronized=False):
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized, name=name
    )


def attach_in_order(owner, layers) -> tuple:
    """Sets each layer as `owner.<layer.name>` and returns the names in order.

    Keras 3 tracks layers held in a Python list for its own weights, but does not
    expose them to tf.train.Checkpoint's object graph, so a partial restore (the
    encoder alone) would silently skip them. Named attributes are exposed.
    """
    names = []
    for layer in layers:
        if hasattr(owner, layer.name):
            raise ValueError(f"{type(owner).__name__} already has an attribute {layer.name!r}")
        setattr(owner, layer.name, layer)
        names.append(layer.name)
    return tuple(names)


def check_images(encoder, shape) -> None:
    """Raises a clear error unless `shape` is [B, S, S, 3] with S = encoder.image_size."""
    size = encoder.image_size
    if len(shape) != 4 or shape[-1] != 3 or shape[1] != size or shape[2] != size:
        raise UserError(
            f"{type(encoder).__name__}(image_size={size}) expects images of shape "
            f"[B, {size}, {size}, 3], received {tuple(shape)}; resize/crop the input, convert "
            "grayscale/RGBA images to RGB, or build the encoder for that size."
        )


def build_on_dummy_batch(encoder, input_shape) -> None:
    """Builds an encoder by running it once, so every variable exists before fit or a
    checkpoint restore."""
    check_images(encoder, (2,) + tuple(input_shape[1:]))
    size = encoder.image_size
    encoder.call(ops.zeros((2, size, size, 3)), training=False)


def count_trainable_params(model) -> int:
    """Trainable parameters of a Keras model or layer: the one count every report prints."""
    return int(sum(int(ops.size(v)) for v in model.trainable_variables))


def with_args(base_config: dict, layer, names) -> dict:
    """A layer's `get_config`: its base config plus the constructor arguments `names`,
    each read from the attribute of the same name (the keras-hub layer contract)."""
    return dict(base_config, **{n: getattr(layer, n) for n in names})
