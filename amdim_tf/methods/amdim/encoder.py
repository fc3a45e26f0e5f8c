"""AMDIM's encoder: a padding-free ResNet returning multiscale features, and its critic heads.

Bachman, Hjelm & Buchwalter (2019), "Learning Representations by Maximizing
Mutual Information Across Views", §3.5, and the official PyTorch code
(github.com/Philip-Bachman/amdim-public, `model.py`: Conv3x3, ConvResNxN,
ConvResBlock, FakeRKHSConvNet, Encoder). The encoder maps a 32, 64 or 128 px
image to feature maps whose spatial sides are exactly 7, 5 and 1; critic heads
(`RKHSHead`) embed the 7x7 and 5x5 maps into the n_rkhs space in which the
InfoNCE scores are dot products. It returns a dict of named features.

Every convolution is 'valid': the encoder never pads, so each location of the
7x7 / 5x5 / 1x1 maps sees a well-defined patch of the input and local features
do not see image borders through zero padding. Initialisation follows the
official code (PyTorch's default conv init, see `nn.py`; zero for the last conv
of every residual branch, so each unit starts as its shortcut).
"""

import keras
from keras import ops

from amdim_tf.errors import UserError
from amdim_tf.methods.amdim import R1, R5, R7
from amdim_tf.methods.nn import (
    TORCH_DEFAULT_KERNEL_INIT,
    NoisyIdentity,
    attach_in_order,
    batch_norm,
    build_on_dummy_batch,
    check_images,
    torch_default_bias_init,
    with_args,
)

SUPPORTED_SIZES = (32, 64, 128)


@keras.saving.register_keras_serializable(package="amdim_tf")
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
        return (
            shape[0],
            None if shape[1] is None else shape[1] + p,
            None if shape[2] is None else shape[2] + p,
            shape[3],
        )

    def call(self, x):
        if self.reflect_pad:
            p = self.reflect_pad
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")
        return ops.relu(self.conv(x))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(self._padded_shape(input_shape))

    def get_config(self):
        names = ("filters", "kernel_size", "strides", "reflect_pad")
        return with_args(super().get_config(), self, names)


@keras.saving.register_keras_serializable(package="amdim_tf")
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

    def __init__(
        self, filters, kernel_size=1, strides=1, use_bn=False, synchronized_bn=False, **kwargs
    ):
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
            self.filters,
            k,
            strides=s,
            padding="valid",
            use_bias=False,
            kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
            name="conv1",
        )
        self.conv1.build(input_shape)
        mid_shape = self.conv1.compute_output_shape(input_shape)
        self.bn = batch_norm("bn", self.synchronized_bn) if self.use_bn else None
        if self.bn is not None:
            self.bn.build(mid_shape)
        self.conv2 = keras.layers.Conv2D(
            self.filters, 1, use_bias=False, kernel_initializer="zeros", name="conv2"
        )
        self.conv2.build(mid_shape)
        self.n_grow = self.filters - n_in
        if self.n_grow < 0:
            # Fewer output channels than input: zero padding cannot shrink, so the
            # official code learns the shortcut instead.
            self.shortcut = keras.layers.Conv2D(
                self.filters,
                k,
                strides=s,
                padding="valid",
                use_bias=True,
                kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
                bias_initializer=torch_default_bias_init(n_in * k * k),
                name="shortcut",
            )
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
        names = ("filters", "kernel_size", "strides", "use_bn", "synchronized_bn")
        return with_args(super().get_config(), self, names)


@keras.saving.register_keras_serializable(package="amdim_tf")
class ResidualBlock(keras.layers.Layer):
    """The official `ConvResBlock`: one strided `ResidualUnit`, then `depth - 1`
    1x1 units of the same width.

    Args:
        filters, kernel_size, strides, use_bn, synchronized_bn: as `ResidualUnit`.
        depth: units in the block (the paper's `n_depth`).
    """

    def __init__(
        self, filters, kernel_size, strides, depth, use_bn=False, synchronized_bn=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.depth = depth
        self.use_bn = use_bn
        self.synchronized_bn = synchronized_bn
        self._unit_names = attach_in_order(
            self,
            [
                ResidualUnit(
                    filters,
                    kernel_size if i == 0 else 1,
                    strides if i == 0 else 1,
                    use_bn,
                    synchronized_bn,
                    name=f"unit{i}",
                )
                for i in range(depth)
            ],
        )

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
        names = ("filters", "kernel_size", "strides", "depth", "use_bn", "synchronized_bn")
        return with_args(super().get_config(), self, names)


@keras.saving.register_keras_serializable(package="amdim_tf")
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
        self.conv1 = keras.layers.Conv2D(
            self.n_rkhs,
            1,
            use_bias=False,
            kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
            name="conv1",
        )
        self.conv1.build(input_shape)
        mid_shape = self.conv1.compute_output_shape(input_shape)
        self.bn1 = batch_norm("bn1", self.synchronized_bn) if self.use_bn else None
        if self.bn1 is not None:
            self.bn1.build(mid_shape)
        self.conv2 = keras.layers.Conv2D(
            self.n_rkhs, 1, use_bias=False, kernel_initializer="zeros", name="conv2"
        )
        self.conv2.build(mid_shape)
        # Near the identity (when widening), so the head starts as a pass-through.
        init = NoisyIdentity() if self.n_rkhs >= n_in else TORCH_DEFAULT_KERNEL_INIT
        self.shortcut = keras.layers.Conv2D(
            self.n_rkhs,
            1,
            use_bias=True,
            kernel_initializer=init,
            bias_initializer=torch_default_bias_init(n_in),
            name="shortcut",
        )
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
        config.update(n_rkhs=self.n_rkhs, use_bn=self.use_bn, synchronized_bn=self.synchronized_bn)
        return config


def _stem_and_trunk(image_size, ndf, n_depth, use_bn, sync_bn):
    """(stem layers, [(name, layer)] of the trunk up to the 7x7 map, 7x7 width)."""
    block = lambda f, k, s, name: ResidualBlock(f, k, s, n_depth, use_bn, sync_bn, name=name)
    if image_size == 32:
        stem = [ConvReLU(ndf, 3, name="stem_conv")]  # 30x30
        trunk = [
            ResidualUnit(ndf, 1, 1, use_bn, sync_bn, name="stem_res"),
            block(2 * ndf, 4, 2, "down1"),  # 14x14
            block(4 * ndf, 2, 2, "down2"),
        ]  # 7x7
        return stem + trunk, 4 * ndf
    if image_size == 64:
        stem = [ConvReLU(ndf, 3, name="stem_conv")]  # 62x62
    else:
        stem = [
            ConvReLU(ndf, 5, strides=2, reflect_pad=2, name="stem_conv5"),  # 64x64
            ConvReLU(ndf, 3, name="stem_conv"),
        ]  # 62x62
    trunk = [
        block(2 * ndf, 4, 2, "down1"),  # 30x30
        block(4 * ndf, 4, 2, "down2"),  # 14x14
        block(8 * ndf, 2, 2, "down3"),
    ]  # 7x7
    return stem + trunk, 8 * ndf


@keras.saving.register_keras_serializable(package="amdim_tf")
class AMDIMEncoder(keras.Model):
    """Padding-free multiscale ResNet encoder with AMDIM critic heads.

    Args:
        image_size: 32 (CIFAR), 64 (STL-10) or 128 (ImageNet, Places).
        ndf: base width; the trunk widens to 4*ndf (32 px) or 8*ndf (64/128 px).
        n_rkhs: width of the embedding space shared by r1, r5 and r7.
        n_depth: residual units per block (one strided unit + n_depth-1 1x1 units).
        use_bn: BatchNorm inside residual units and heads (paper default off);
            the three outputs are always batch-normalised.
        synchronized_bn: cross-replica BN statistics under tf.distribute.

    Call: images [B, image_size, image_size, 3] float -> dict with
        "r1" [B,1,1,n_rkhs], "r5" [B,5,5,n_rkhs], "r7" [B,7,7,n_rkhs] (after the
        critic heads) and the pre-head maps "h5" [B,5,5,C], "h7" [B,7,7,C].

    Reference: Bachman, Hjelm & Buchwalter, "Learning Representations by
    Maximizing Mutual Information Across Views", NeurIPS 2019.
    """

    def __init__(
        self,
        image_size: int,
        ndf: int,
        n_rkhs: int,
        n_depth: int,
        use_bn: bool = False,
        synchronized_bn: bool = False,
        **kwargs,
    ):
        # No defaults for the sizes: the run config (config_lib.base_config) is their one
        # source, through methods.build_encoder.
        super().__init__(**kwargs)
        if image_size not in SUPPORTED_SIZES:
            raise UserError(
                f"AMDIMEncoder supports image_size in {SUPPORTED_SIZES}, received "
                f"image_size={image_size!r}; resize or crop your images to one of these "
                "(e.g. set config.model.image_size and config.data.image_size)."
            )
        for name, value in (("ndf", ndf), ("n_rkhs", n_rkhs), ("n_depth", n_depth)):
            if not isinstance(value, int) or value < 1:
                raise UserError(
                    f"AMDIMEncoder needs a positive integer {name}, received {value!r}."
                )
        self.image_size = image_size
        self.ndf = ndf
        self.n_rkhs = n_rkhs
        self.n_depth = n_depth
        self.use_bn = use_bn
        self.synchronized_bn = synchronized_bn
        trunk, width7 = _stem_and_trunk(image_size, ndf, n_depth, use_bn, synchronized_bn)
        self._trunk_names = attach_in_order(self, trunk)
        # The official code's optional BN on the 7x7 map (only with use_bn).
        self.bn7 = batch_norm("bn7", synchronized_bn) if use_bn else None
        self.block5 = ResidualBlock(
            width7, 3, 1, n_depth, use_bn, synchronized_bn, name="block5"
        )  # 5x5
        self.block3 = ResidualBlock(
            width7, 3, 1, n_depth, use_bn, synchronized_bn, name="block3"
        )  # 3x3
        self.to_r1 = ResidualUnit(n_rkhs, 3, 1, use_bn, synchronized_bn, name="to_r1")  # 1x1
        self.bn1 = batch_norm("bn_r1", synchronized_bn)
        self.head5 = RKHSHead(n_rkhs, use_bn, synchronized_bn, name="head5")
        self.head7 = RKHSHead(n_rkhs, use_bn, synchronized_bn, name="head7")
        self.width7 = width7

    @property
    def feature_shapes(self) -> dict:
        """(side, side, channels) of every output, known before the encoder is built."""
        w, d = self.width7, self.n_rkhs
        return {R1: (1, 1, d), R5: (5, 5, d), R7: (7, 7, d), "h5": (5, 5, w), "h7": (7, 7, w)}

    @property
    def trunk(self):
        return [getattr(self, name) for name in self._trunk_names]

    def build(self, input_shape):
        build_on_dummy_batch(self, input_shape)

    def call(self, images, training=None):
        check_images(self, images.shape)
        h = images
        for layer in self.trunk:
            h = layer(h, training=training)
        if self.bn7 is not None:
            h = self.bn7(h, training=training)
        h7 = h  # [B, 7, 7, C]
        h5 = self.block5(h7, training=training)  # [B, 5, 5, C]
        h3 = self.block3(h5, training=training)  # [B, 3, 3, C]
        r1 = self.bn1(self.to_r1(h3), training=training)  # [B, 1, 1, n_rkhs]
        return {
            R1: r1,
            R5: self.head5(h5, training=training),  # [B, 5, 5, n_rkhs]
            R7: self.head7(h7, training=training),  # [B, 7, 7, n_rkhs]
            "h5": h5,
            "h7": h7,
        }

    def get_config(self):
        names = ("image_size", "ndf", "n_rkhs", "n_depth", "use_bn", "synchronized_bn")
        return with_args(super().get_config(), self, names)
