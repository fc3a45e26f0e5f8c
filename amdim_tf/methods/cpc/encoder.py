"""CPC's image encoder: overlapping patches, a shared patch encoder, a causal context network.

Contrastive Predictive Coding on images (van den Oord, Li & Vinyals 2018, §3.2;
Hénaff et al. 2019, "Data-Efficient Image Recognition with CPC", §3.1-3.2):
the image is cut into a grid of overlapping patches (32 px: 8x8 patches at
stride 4 -> a 7x7 grid; 64 px: 16/8 -> 7x7), every patch is encoded by the same
small conv net to a vector z_{i,j}, and an autoregressive context network reads
the grid top to bottom so that c_{i,j} summarises rows <= i only. The
objective (`objectives/cpc.py`) predicts z_{i+k,j} from c_{i,j}.

Normalisation is LayerNorm, never BatchNorm (CPC v2 §3.2: batch statistics
leak information between the patches a prediction must tell apart). In the
context network LayerNorm is over channels only, per location: normalising
over the grid would let rows below leak into c_{i,j} and break causality.

The global feature the probes read, "r1", is the mean of the patch-embedding
grid z (CPC v2's linear evaluation also mean-pools the patch features).
"""

import math

import keras
from keras import ops

from amdim_tf.errors import UserError
from amdim_tf.methods.cpc import GLOBAL, C, Z
from amdim_tf.methods.nn import (
    TORCH_DEFAULT_KERNEL_INIT,
    attach_in_order,
    build_on_dummy_batch,
    check_images,
    with_args,
)


def patch_geometry(image_size, patch_size=0, patch_stride=0):
    """(patch_size, stride, grid side); 0 = image_size/4 and /8: a 7x7 grid of half-overlapping patches."""
    if not (patch_size and patch_stride) and image_size % 8:
        raise UserError(
            f"CPC's default patch grid needs image_size divisible by 8, "
            f"received {image_size!r}; set config.cpc.patch_size / patch_stride."
        )
    size = patch_size or image_size // 4
    stride = patch_stride or image_size // 8
    if size > image_size or size < 4 or size & (size - 1) or stride < 1:
        raise UserError(
            f"CPC needs a power-of-two patch_size in [4, image_size] and a positive "
            f"stride, received patch_size={size!r}, patch_stride={stride!r} for "
            f"image_size={image_size}."
        )
    return size, stride, (image_size - size) // stride + 1


def _conv(filters, kernel, strides=1, padding="same", name=None):
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
        name=name,
    )


@keras.saving.register_keras_serializable(package="amdim_tf")
class CausalConvBlock(keras.layers.Layer):
    """Residual PixelCNN-style block over the patch grid: row i sees rows <= i only.

    x + Conv1x1(ReLU(LN(CausalConv_{k x k}(ReLU(LN(x)))))), where the causal
    conv pads k-1 zero rows on top and none below ("down-shifted" convolution,
    van den Oord et al. 2016), so each output row reads the k rows ending at its
    own; the full width of those rows is visible. LayerNorm is per location.

    Args:
        kernel_size: square kernel of the causal conv (3).
    Shapes: [B, H, W, D] -> [B, H, W, D].
    """

    def __init__(self, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size

    def build(self, input_shape):
        dim, k = input_shape[-1], self.kernel_size
        self.ln1 = keras.layers.LayerNormalization(axis=-1, name="ln1")
        self.pad = keras.layers.ZeroPadding2D(((k - 1, 0), (k // 2, (k - 1) // 2)))
        self.causal = _conv(dim, k, padding="valid", name="causal_conv")
        self.ln2 = keras.layers.LayerNormalization(axis=-1, name="ln2")
        self.mix = _conv(dim, 1, name="mix")
        self.ln1.build(input_shape)
        self.causal.build(self.pad.compute_output_shape(input_shape))
        self.ln2.build(input_shape)
        self.mix.build(input_shape)

    def call(self, x):
        h = self.causal(self.pad(ops.relu(self.ln1(x))))  # [B, H, W, D]
        return x + self.mix(ops.relu(self.ln2(h)))  # [B, H, W, D]

    def get_config(self):
        return dict(super().get_config(), kernel_size=self.kernel_size)


@keras.saving.register_keras_serializable(package="amdim_tf")
class CPCEncoder(keras.Model):
    """Patch encoder + autoregressive context network of CPC on images.

    Args:
        image_size: side of the square input.
        ndf: width of the patch encoder's first conv; it doubles at the first
            stride-2 conv.
        n_rkhs: width of the patch embeddings z, the context c and r1.
        patch_size, patch_stride: patch geometry; 0 = image_size/4 and /8
            (a 7x7 grid of half-overlapping patches).
        context_blocks: residual causal blocks of the context network.

    Patch encoder (per patch, LayerNorm over the patch): conv3x3(ndf) then
    stride-2 conv3x3(2 ndf) stages down to 2x2, mean-pool, Dense(n_rkhs).

    Call: images [B, S, S, 3] -> dict with
        "r1" [B, 1, 1, n_rkhs]: mean over the grid of z (what the probes read);
        "z" [B, G, G, n_rkhs]: patch embeddings (G = (S - patch) / stride + 1);
        "c" [B, G, G, n_rkhs]: causal context, c[:, i] depends on rows <= i.
    """

    def __init__(
        self,
        image_size: int,
        ndf: int,
        n_rkhs: int,
        patch_size: int = 0,
        patch_stride: int = 0,
        context_blocks: int = 2,
        **kwargs,
    ):
        # No defaults for the sizes: the run config (configs/cpc.py) is their one source,
        # through methods.build_encoder; 0 patch sizes mean "derived from image_size".
        super().__init__(**kwargs)
        self.image_size = image_size
        self.ndf = ndf
        self.n_rkhs = n_rkhs
        self.patch_size, self.patch_stride, self.grid = patch_geometry(
            image_size, patch_size, patch_stride
        )
        self.context_blocks = context_blocks
        n_down = int(math.log2(self.patch_size)) - 1  # strided convs down to 2x2
        layers = [
            _conv(ndf, 3, name="patch_conv0"),
            keras.layers.LayerNormalization(axis=(1, 2, 3), name="patch_ln0"),
            keras.layers.ReLU(),
        ]
        for s in range(n_down):
            layers += [
                _conv(2 * ndf, 3, strides=2, name=f"patch_conv{s + 1}"),
                keras.layers.LayerNormalization(axis=(1, 2, 3), name=f"patch_ln{s + 1}"),
                keras.layers.ReLU(),
            ]
        layers += [
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(n_rkhs, kernel_initializer=TORCH_DEFAULT_KERNEL_INIT, name="to_z"),
        ]
        self.patch_encoder = keras.Sequential(
            [keras.Input((self.patch_size, self.patch_size, 3))] + layers, name="patch_encoder"
        )
        self._context_names = attach_in_order(
            self, [CausalConvBlock(3, name=f"context{i}") for i in range(context_blocks)]
        )
        self.context_ln = keras.layers.LayerNormalization(axis=-1, name="context_ln")

    @property
    def context(self):
        return [getattr(self, n) for n in self._context_names]

    @property
    def feature_shapes(self) -> dict:
        """(side, side, channels) of every output, known before the encoder is built."""
        g, d = self.grid, self.n_rkhs
        return {GLOBAL: (1, 1, d), Z: (g, g, d), C: (g, g, d)}

    def build(self, input_shape):
        build_on_dummy_batch(self, input_shape)

    def call(self, images, training=None):
        check_images(self, images.shape)
        b, g, p = ops.shape(images)[0], self.grid, self.patch_size
        patches = ops.image.extract_patches(
            images, p, strides=self.patch_stride, padding="valid"
        )  # [B, G, G, p*p*3]
        patches = ops.reshape(patches, (-1, p, p, 3))  # [B*G*G, p, p, 3]
        z = self.patch_encoder(patches, training=training)  # [B*G*G, D]
        z = ops.reshape(z, (b, g, g, self.n_rkhs))  # [B, G, G, D]
        c = z
        for block in self.context:
            c = block(c)  # [B, G, G, D]
        c = self.context_ln(c)  # [B, G, G, D]
        return {
            GLOBAL: ops.mean(z, axis=(1, 2), keepdims=True),  # [B, 1, 1, D]
            Z: z,  # [B, G, G, D]
            C: c,  # [B, G, G, D]
        }

    def get_config(self):
        names = ("image_size", "ndf", "n_rkhs", "patch_size", "patch_stride", "context_blocks")
        return with_args(super().get_config(), self, names)
