"""Deep InfoMax's own DCGAN-like encoder (Hjelm et al., ICLR 2019, appendix A.2).

The official code's `basic32x32` / `basic64x64` encoders (github.com/rdevon/DIM,
`cortex_DIM/configs/convnets.py`): conv k4 s2 p1 + BN + ReLU stages of width
64-128-256 (32 px; 64 px adds 512), flatten, FC 1024 + BN + ReLU, then a linear
64-d global feature Y. Keras' 'same' padding for k4 s2 on an even side pads one
pixel on each side, exactly the official p=1, so each stage halves the side:
32 -> 16 -> 8 -> 4 (64 px: 64 -> 32 -> 16 -> 8 -> 4).

The local map M of local DIM is the *second-to-last* conv stage, as the
official `local_idx` (1 for 32 px, 2 for 64 px): 8x8x128 at 32 px and 8x8x256
at 64 px, not the last (4x4) stage. Convs have no bias (BN follows, as the
official `bias=not batch_norm`); init is PyTorch's default, as in `layers.py`.
"""

import keras
from keras import ops

from amdim_tf.errors import UserError
from amdim_tf.methods.dim import GLOBAL, LOCAL
from amdim_tf.methods.nn import (
    TORCH_DEFAULT_KERNEL_INIT,
    attach_in_order,
    batch_norm,
    build_on_dummy_batch,
    check_images,
    torch_default_bias_init,
    with_args,
)

SUPPORTED_SIZES = (32, 64)


def dim_conv_widths(image_size, ndf):
    """Widths of the k4 s2 conv stages: (ndf, 2ndf, 4ndf) at 32 px, plus 8ndf at 64 px."""
    if image_size not in SUPPORTED_SIZES:
        raise UserError(
            f"DIMEncoder supports image_size in {SUPPORTED_SIZES} (the official basic32x32 / "
            f"basic64x64 encoders), received image_size={image_size!r}; use "
            "config.dim.encoder='amdim' for 128 px images."
        )
    n_stages = 3 if image_size == 32 else 4
    return tuple(ndf * 2**i for i in range(n_stages))


def dim_local_shape(image_size, ndf, local_layer=-1):
    """(side, side, channels) of the local map M for these settings (see `DIMEncoder`)."""
    widths = dim_conv_widths(image_size, ndf)
    index = _local_index(len(widths), local_layer)
    side = image_size // 2 ** (index + 1)
    return (side, side, widths[index])


def _local_index(n_stages, local_layer):
    index = n_stages - 2 if local_layer == -1 else local_layer
    if not 0 <= index < n_stages:
        raise UserError(
            f"local_layer must be -1 (auto) or in [0, {n_stages}), received {local_layer!r}."
        )
    return index


@keras.saving.register_keras_serializable(package="amdim_tf")
class DIMEncoder(keras.Model):
    """DIM's conv encoder returning the global feature Y and the local map M.

    Args:
        image_size: 32 or 64.
        ndf: width of the first conv stage (64 in the paper); stage s has ndf * 2**s.
        n_rkhs: width of Y, the global feature (64 in the paper).
        fc_units: width of the hidden FC layer (1024 in the paper).
        local_layer: conv stage whose output is the local map M; -1 picks the
            official choice (the 8x8 stage, second to last).
        synchronized_bn: cross-replica BN statistics under tf.distribute.

    Call: images [B, S, S, 3] -> dict with
        "r1" [B, 1, 1, n_rkhs]: Y, the global feature the probes read;
        "local" [B, M, M, C]: the local map (8x8x(2 ndf) at 32 px);
        "conv" [B, 4, 4, C_last]: the last conv stage (the paper's "conv" probe layer);
        "fc" [B, 1, 1, fc_units]: the hidden FC layer (the paper's "fc" probe layer).

    Reference: Hjelm et al., "Learning deep representations by mutual
    information estimation and maximization", ICLR 2019.
    """

    def __init__(
        self,
        image_size: int,
        ndf: int,
        n_rkhs: int,
        fc_units: int,
        local_layer: int = -1,
        synchronized_bn: bool = False,
        **kwargs,
    ):
        # No defaults for the sizes: the run config (configs/dim_*.py) is their one
        # source, through methods.build_encoder.
        super().__init__(**kwargs)
        widths = dim_conv_widths(image_size, ndf)
        for name, value in (("ndf", ndf), ("n_rkhs", n_rkhs), ("fc_units", fc_units)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"DIMEncoder needs a positive integer {name}, received {value!r}.")
        self.image_size = image_size
        self.ndf = ndf
        self.n_rkhs = n_rkhs
        self.fc_units = fc_units
        self.local_layer = local_layer
        self.synchronized_bn = synchronized_bn
        self.local_index = _local_index(len(widths), local_layer)
        self._conv_names = attach_in_order(
            self,
            [
                keras.layers.Conv2D(
                    w,
                    4,
                    strides=2,
                    padding="same",
                    use_bias=False,
                    kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
                    name=f"conv{i}",
                )
                for i, w in enumerate(widths)
            ],
        )
        self._bn_names = attach_in_order(
            self, [batch_norm(f"conv{i}_bn", synchronized_bn) for i in range(len(widths))]
        )
        flat = 4 * 4 * widths[-1]
        self.fc = keras.layers.Dense(
            fc_units,
            kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
            bias_initializer=torch_default_bias_init(flat),
            name="fc",
        )
        self.fc_bn = batch_norm("fc_bn", synchronized_bn)
        self.to_y = keras.layers.Dense(
            n_rkhs,
            kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
            bias_initializer=torch_default_bias_init(fc_units),
            name="to_y",
        )

    @property
    def convs(self):
        return [getattr(self, n) for n in self._conv_names]

    @property
    def conv_bns(self):
        return [getattr(self, n) for n in self._bn_names]

    @property
    def feature_shapes(self) -> dict:
        """(side, side, channels) of every output, known before the encoder is built."""
        widths = dim_conv_widths(self.image_size, self.ndf)
        return {
            GLOBAL: (1, 1, self.n_rkhs),
            LOCAL: dim_local_shape(self.image_size, self.ndf, self.local_layer),
            "conv": (4, 4, widths[-1]),
            "fc": (1, 1, self.fc_units),
        }

    def build(self, input_shape):
        build_on_dummy_batch(self, input_shape)

    def call(self, images, training=None):
        check_images(self, images.shape)
        h = images
        maps = []
        for conv, bn in zip(self.convs, self.conv_bns, strict=True):
            h = ops.relu(bn(conv(h), training=training))  # [B, S/2^(s+1), ., w_s]
            maps.append(h)
        flat = ops.reshape(h, (ops.shape(h)[0], -1))  # [B, 16 * C_last]
        fc = ops.relu(self.fc_bn(self.fc(flat), training=training))  # [B, fc_units]
        y = self.to_y(fc)  # [B, n_rkhs]
        return {
            GLOBAL: ops.reshape(y, (-1, 1, 1, self.n_rkhs)),  # [B, 1, 1, n_rkhs]
            LOCAL: maps[self.local_index],  # [B, M, M, C]
            "conv": maps[-1],  # [B, 4, 4, C_last]
            "fc": ops.reshape(fc, (-1, 1, 1, self.fc_units)),  # [B, 1, 1, fc_units]
        }

    def get_config(self):
        names = ("image_size", "ndf", "n_rkhs", "fc_units", "local_layer", "synchronized_bn")
        return with_args(super().get_config(), self, names)
