"""The AMDIM encoder: a padding-free ResNet returning multiscale features.

Bachman, Hjelm & Buchwalter (2019), §3.5 ("Efficient NCE computation ... encoder
architecture"), and the official code's `Encoder`. The encoder maps a 32, 64 or
128 px image to feature maps whose spatial sides are exactly 7, 5 and 1; critic
heads (`RKHSHead`) embed the 7x7 and 5x5 maps into the n_rkhs space in which
the InfoNCE scores are dot products. The model returns a dict of named
features, never a positional tuple.
"""

import keras
from keras import ops

from amdim_tf.layers import (ConvReLU, ResidualBlock, ResidualUnit, RKHSHead, attach_in_order,
                             batch_norm, build_on_dummy_batch, check_images)

SUPPORTED_SIZES = (32, 64, 128)


def _stem_and_trunk(image_size, ndf, n_depth, use_bn, sync_bn):
    """(stem layers, [(name, layer)] of the trunk up to the 7x7 map, 7x7 width)."""
    block = lambda f, k, s, name: ResidualBlock(f, k, s, n_depth, use_bn, sync_bn, name=name)
    if image_size == 32:
        stem = [ConvReLU(ndf, 3, name="stem_conv")]                        # 30x30
        trunk = [ResidualUnit(ndf, 1, 1, use_bn, sync_bn, name="stem_res"),
                 block(2 * ndf, 4, 2, "down1"),                           # 14x14
                 block(4 * ndf, 2, 2, "down2")]                           # 7x7
        return stem + trunk, 4 * ndf
    if image_size == 64:
        stem = [ConvReLU(ndf, 3, name="stem_conv")]                        # 62x62
    else:
        stem = [ConvReLU(ndf, 5, strides=2, reflect_pad=2, name="stem_conv5"),  # 64x64
                ConvReLU(ndf, 3, name="stem_conv")]                        # 62x62
    trunk = [block(2 * ndf, 4, 2, "down1"),                              # 30x30
             block(4 * ndf, 4, 2, "down2"),                              # 14x14
             block(8 * ndf, 2, 2, "down3")]                              # 7x7
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

    def __init__(self, image_size=32, ndf=128, n_rkhs=1024, n_depth=3, use_bn=False,
                 synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        if image_size not in SUPPORTED_SIZES:
            raise ValueError(
                f"AMDIMEncoder supports image_size in {SUPPORTED_SIZES}, received "
                f"image_size={image_size!r}; resize or crop your images to one of these "
                "(e.g. set config.model.image_size and config.data.image_size).")
        for name, value in (("ndf", ndf), ("n_rkhs", n_rkhs), ("n_depth", n_depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"AMDIMEncoder needs a positive integer {name}, received {value!r}.")
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
        self.block5 = ResidualBlock(width7, 3, 1, n_depth, use_bn, synchronized_bn, name="block5")  # 5x5
        self.block3 = ResidualBlock(width7, 3, 1, n_depth, use_bn, synchronized_bn, name="block3")  # 3x3
        self.to_r1 = ResidualUnit(n_rkhs, 3, 1, use_bn, synchronized_bn, name="to_r1")            # 1x1
        self.bn1 = batch_norm("bn_r1", synchronized_bn)
        self.head5 = RKHSHead(n_rkhs, use_bn, synchronized_bn, name="head5")
        self.head7 = RKHSHead(n_rkhs, use_bn, synchronized_bn, name="head7")
        self.width7 = width7

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
        h7 = h                                                  # [B, 7, 7, C]
        h5 = self.block5(h7, training=training)                 # [B, 5, 5, C]
        h3 = self.block3(h5, training=training)                 # [B, 3, 3, C]
        r1 = self.bn1(self.to_r1(h3), training=training)       # [B, 1, 1, n_rkhs]
        return {
            "r1": r1,
            "r5": self.head5(h5, training=training),            # [B, 5, 5, n_rkhs]
            "r7": self.head7(h7, training=training),            # [B, 7, 7, n_rkhs]
            "h5": h5,
            "h7": h7,
        }

    def get_config(self):
        config = super().get_config()
        config.update(image_size=self.image_size, ndf=self.ndf, n_rkhs=self.n_rkhs,
                      n_depth=self.n_depth, use_bn=self.use_bn,
                      synchronized_bn=self.synchronized_bn)
        return config


def count_trainable_params(model):
    return int(sum(int(ops.size(v)) for v in model.trainable_variables))
