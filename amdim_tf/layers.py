"""Building blocks of the padding-free AMDIM encoder and its critic heads.

Bachman, Hjelm & Buchwalter (2019), "Learning Representations by Maximizing
Mutual Information Across Views", §3.5 and the official PyTorch code
(github.com/Philip-Bachman/amdim-public, `model.py`: Conv3x3, ConvResNxN,
ConvResBlock, FakeRKHSConvNet). Every convolution is 'valid': the encoder never
pads, so the receptive field of each location in the 7x7 / 5x5 / 1x1 maps is a
well-defined patch of the input and local features do not see image borders
through zero padding.

Initialisation follows the official code so that training dynamics match:
PyTorch's default conv init (kaiming-uniform with a=sqrt(5), i.e.
U(+-1/sqrt(fan_in)) for weights and biases), and zero for the last conv of every
residual branch (fixup-style), so each unit starts as its shortcut.
"""

import math

import keras
from keras import ops

# PyTorch's nn.Conv2d default: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
TORCH_DEFAULT_KERNEL_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}
# PyTorch BatchNorm2d: momentum 0.1 (Keras counts the other way), eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def torch_default_bias_init(fan_in):
    """PyTorch's default bias init for a layer with `fan_in` inputs."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def attach_in_order(owner, layers):
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


def check_images(encoder, shape):
    """Raises a clear error unless `shape` is [B, S, S, 3] with S = encoder.image_size."""
    size = encoder.image_size
    if len(shape) != 4 or shape[-1] != 3 or shape[1] != size or shape[2] != size:
        raise ValueError(
            f"{type(encoder).__name__}(image_size={size}) expects images of shape "
            f"[B, {size}, {size}, 3], received {tuple(shape)}; resize/crop the input, convert "
            "grayscale/RGBA images to RGB, or build the encoder for that size.")


def build_on_dummy_batch(encoder, input_shape):
    """Builds an encoder by running it once, so every variable exists before fit or a
    checkpoint restore."""
    check_images(encoder, (2,) + tuple(input_shape[1:]))
    size = encoder.image_size
    encoder.call(ops.zeros((2, size, size, 3)), training=False)


def batch_norm(name=None, synchronized=False):
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized, name=name
    )


class ConvReLU(keras.layers.Layer):
    """Stem convolution: optional reflect padding, conv with bias, ReLU.

    Args:
        filters: output channels.
        kernel_size: square kernel width.
        strides: stride.
        reflect_pad: pixels of reflect padding added on each side before the
            conv (the 128 px stem uses 2; the official code's only padding).

    Shapes: [B, H, W, C] -> [B, (H + 2p - k) // s + 1, ..., filters].
    """

    def __init__(self, filters, kernel_size, strides=1, reflect_pad=0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.reflect_pad = reflect_pad

    def build(self, input_shape):
        fan_in = input_shape[-1] * self.kernel_size**2
        self.conv = keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding="valid",
            use_bias=True,
            kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
            bias_initializer=torch_default_bias_init(fan_in),
            name="conv",
        )
        self.conv.build(self._padded_shape(input_shape))

    def _padded_shape(self, shape):
        p = 2 * self.reflect_pad
        return (shape[0], None if shape[1] is None else shape[1] + p,
                None if shape[2] is None else shape[2] + p, shape[3])

    def call(self, x):
        if self.reflect_pad:
            p = self.reflect_pad
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")
        return ops.relu(self.conv(x))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(self._padded_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, reflect_pad=self.reflect_pad)
        return config


class ResidualUnit(keras.layers.Layer):
    """The official `ConvResNxN`: a residual unit with no padding and no final ReLU.

    branch   = conv1x1(ReLU(MaybeBN(conv_kxk_stride_s(x))))   (no biases, conv1x1 = 0 at init)
    shortcut = avg_pool(k, s)(x), zero-padded along channels to `filters`
               (or a k x k strided conv with bias when `filters` < input channels)
    output   = branch + shortcut       (no ReLU after the sum, as in the official code)

    Args:
        filters: output channels.
        kernel_size: k; the unit shrinks each spatial side by k - 1 before striding.
        strides: s.
        use_bn: BatchNorm after the first conv (the paper's default is off).
        synchronized_bn: cross-replica BatchNorm statistics under tf.distribute.
    """

    def __init__(self, filters, kernel_size=1, strides=1, use_bn=False,
                 synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.use_bn = use_bn
        self.synchronized_bn = synchronized_bn

    def build(self, input_shape):
        n_in = input_shape[-1]
        k, s = self.kernel_size, self.strides
        self.conv1 = keras.layers.Conv2D(
            self.filters, k, strides=s, padding="valid", use_bias=False,
            kernel_initializer=TORCH_DEFAULT_KERNEL_INIT, name="conv1")
        self.conv1.build(input_shape)
        mid_shape = self.conv1.compute_output_shape(input_shape)
        self.bn = batch_norm("bn", self.synchronized_bn) if self.use_bn else None
        if self.bn is not None:
            self.bn.build(mid_shape)
        self.conv2 = keras.layers.Conv2D(
            self.filters, 1, use_bias=False, kernel_initializer="zeros", name="conv2")
        self.conv2.build(mid_shape)
        self.n_grow = self.filters - n_in
        if self.n_grow < 0:
            # Fewer output channels than input: zero padding cannot shrink, so the
            # official code learns the shortcut instead.
            self.shortcut = keras.layers.Conv2D(
                self.filters, k, strides=s, padding="valid", use_bias=True,
                kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
                bias_initializer=torch_default_bias_init(n_in * k * k), name="shortcut")
            self.shortcut.build(input_shape)
        else:
            self.shortcut = None

    def call(self, x, training=None):
        h = self.conv1(x)
        if self.bn is not None:
            h = self.bn(h, training=training)
        h = self.conv2(ops.relu(h))
        if self.shortcut is not None:
            return h + self.shortcut(x)
        k, s = self.kernel_size, self.strides
        short = x if (k == 1 and s == 1) else ops.average_pool(x, k, s, padding="valid")
        if self.n_grow > 0:
            short = ops.pad(short, [[0, 0], [0, 0], [0, 0], [0, self.n_grow]])
        return h + short

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, use_bn=self.use_bn,
                      synchronized_bn=self.synchronized_bn)
        return config


class ResidualBlock(keras.layers.Layer):
    """The official `ConvResBlock`: one strided `ResidualUnit`, then `depth - 1`
    1x1 units of the same width.

    Args:
        filters, kernel_size, strides, use_bn, synchronized_bn: as `ResidualUnit`.
        depth: units in the block (the paper's `n_depth`).
    """

    def __init__(self, filters, kernel_size, strides, depth, use_bn=False,
                 synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.depth = depth
        self.use_bn = use_bn
        self.synchronized_bn = synchronized_bn
        self._unit_names = attach_in_order(self, [
            ResidualUnit(filters, kernel_size if i == 0 else 1, strides if i == 0 else 1,
                         use_bn, synchronized_bn, name=f"unit{i}")
            for i in range(depth)])

    @property
    def units(self):
        return [getattr(self, n) for n in self._unit_names]

    def build(self, input_shape):
        shape = input_shape
        for unit in self.units:
            unit.build(shape)
            shape = unit.compute_output_shape(shape)

    def call(self, x, training=None):
        for unit in self.units:
            x = unit(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        for unit in self.units:
            input_shape = unit.compute_output_shape(input_shape)
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, depth=self.depth, use_bn=self.use_bn,
                      synchronized_bn=self.synchronized_bn)
        return config


class RKHSHead(keras.layers.Layer):
    """Critic head mapping a local feature map into the n_rkhs embedding space
    (the official `FakeRKHSConvNet`, applied to the 5x5 and 7x7 maps).

    out = BN(conv1x1(ReLU(MaybeBN(conv1x1(x)))) + shortcut1x1(x))

    The shortcut (with bias) starts near the identity (U(+-0.01) plus ones on the
    diagonal, when n_rkhs >= input channels) and the second conv at zero, so at
    init the head passes the encoder's features through almost unchanged.

    Args:
        n_rkhs: embedding width.
        use_bn: BatchNorm inside the branch; the output BN is always on.
    """

    def __init__(self, n_rkhs, use_bn=False, synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.n_rkhs = n_rkhs
        self.use_bn = use_bn
        self.synchronized_bn = synchronized_bn

    def build(self, input_shape):
        n_in = input_shape[-1]
        self.conv1 = keras.layers.Conv2D(self.n_rkhs, 1, use_bias=False,
                                         kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
                                         name="conv1")
        self.conv1.build(input_shape)
        mid_shape = self.conv1.compute_output_shape(input_shape)
        self.bn1 = batch_norm("bn1", self.synchronized_bn) if self.use_bn else None
        if self.bn1 is not None:
            self.bn1.build(mid_shape)
        self.conv2 = keras.layers.Conv2D(self.n_rkhs, 1, use_bias=False,
                                         kernel_initializer="zeros", name="conv2")
        self.conv2.build(mid_shape)
        if self.n_rkhs >= n_in:
            def near_identity(shape, dtype=None):
                noise = keras.random.uniform(shape, -0.01, 0.01, dtype=dtype)
                eye = ops.reshape(ops.eye(n_in, self.n_rkhs, dtype=dtype), shape)
                return ops.where(eye > 0, eye, noise)
            shortcut_init = near_identity
        else:
            shortcut_init = TORCH_DEFAULT_KERNEL_INIT
        self.shortcut = keras.layers.Conv2D(
            self.n_rkhs, 1, use_bias=True, kernel_initializer=shortcut_init,
            bias_initializer=torch_default_bias_init(n_in), name="shortcut")
        self.shortcut.build(input_shape)
        self.bn_out = batch_norm("bn_out", self.synchronized_bn)
        self.bn_out.build(mid_shape)

    def call(self, x, training=None):
        h = self.conv1(x)
        if self.bn1 is not None:
            h = self.bn1(h, training=training)
        h = self.conv2(ops.relu(h))
        return self.bn_out(h + self.shortcut(x), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.n_rkhs,)

    def get_config(self):
        config = super().get_config()
        config.update(n_rkhs=self.n_rkhs, use_bn=self.use_bn,
                      synchronized_bn=self.synchronized_bn)
        return config
