"""Contrastive Predictive Coding on images: predict patch embeddings rows below.

van den Oord, Li & Vinyals (2018) §2-3.2 and Hénaff et al. (2019, CPC v2)
§3.1: from the context c_{i,j} of the patch grid, a separate linear map W_k per
row offset k predicts z_{i+k,j}; InfoNCE ranks the true patch embedding
against every other patch of the (global) batch. Offset 1 is skipped: with
half-overlapping patches the patch one row below shares pixels with row i,
which would make the task trivial (the first non-overlapping row is k = 2).

One view: CPC reads `feats1` only ("z" and "c" of `CPCEncoder`); `feats2`
is ignored (the model still encodes view 2, which trains the probes).
The loss is the *mean* over offsets (CPC v1 sums them); a mean keeps its scale
independent of how many rows are predicted. This module owns CPC's maths
(`cpc_infonce`, a pure function of tensors with a NumPy reference test).
"""

import keras
import tensorflow as tf

from amdim_tf import distribute
from amdim_tf.errors import UserError
from amdim_tf.methods.cpc import C, Z
from amdim_tf.methods.nn import TORCH_DEFAULT_KERNEL_INIT, attach_in_order, with_args


def cpc_infonce(
    preds: tf.Tensor, targets: tf.Tensor, offset: int, pos_offset: int | tf.Tensor = 0
) -> tf.Tensor:
    """CPC's InfoNCE for predictions `offset` rows below (van den Oord et al. 2018, eq. 4).

    The prediction made at grid position (n, i, j) targets the patch embedding
    targets[n + pos_offset, i + offset, j]; the negatives are *all other*
    patches of the (global) batch, other images' and the same image's alike
    (CPC v2, Hénaff et al. 2019, §3.1). Scores are plain dot products.

    Args:
        preds: [b, H - offset, W, D] predictions W_k c_{i,j} for rows i < H - offset.
        targets: [B, H, W, D] patch embeddings z of the global batch.
        offset: k >= 1, the row offset predicted (a Python int).
        pos_offset: index in `targets` of this replica's first image.
    Returns:
        float32 scalar: -mean over predictions of log softmax(score of the positive).
    """
    preds = tf.cast(preds, tf.float32)  # [b, H-k, W, D]
    targets = tf.cast(targets, tf.float32)  # [B, H, W, D]
    p_shape = tf.shape(preds)
    t_shape = tf.shape(targets)
    n_src, rows, width = p_shape[0], p_shape[1], p_shape[2]
    height = t_shape[1]
    flat_p = tf.reshape(preds, [-1, p_shape[3]])  # [b*(H-k)*W, D]
    flat_t = tf.reshape(targets, [-1, t_shape[3]])  # [B*H*W, D]
    logits = tf.matmul(flat_p, flat_t, transpose_b=True)  # [b*(H-k)*W, B*H*W]
    n = tf.range(n_src)[:, None, None]  # [b, 1, 1]
    i = tf.range(rows)[None, :, None]  # [1, H-k, 1]
    j = tf.range(width)[None, None, :]  # [1, 1, W]
    # Row-major index of targets[n + pos_offset, i + offset, j] in flat_t.
    pos = ((n + pos_offset) * height + i + offset) * width + j  # [b, H-k, W]
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.reshape(pos, [-1]), logits=logits
    )  # [b*(H-k)*W]
    return tf.reduce_mean(xent)


@keras.saving.register_keras_serializable(package="amdim_tf")
class CPCObjective(keras.layers.Layer):
    """InfoNCE of predicting z_{i+k, j} from c_{i, j}, k = min_offset ... max_offset.

    Args:
        dim: width of z and c (the encoder's n_rkhs).
        grid: side of the patch grid; rows i < grid - k predict.
        min_offset, max_offset: the first and last predicted row offsets
            (config.cpc; 2 and 5 in the preset).

    Call: (feats1, feats2, seed_generator) -> dict of float32 scalars "total"
    (mean over offsets) and "cpc/k{k}" per offset.
    """

    def __init__(self, dim: int, grid: int, min_offset: int, max_offset: int, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= min_offset <= max_offset < grid:
            raise UserError(
                f"CPC needs 1 <= min_offset <= max_offset < grid side ({grid}), "
                f"received min_offset={min_offset!r}, max_offset={max_offset!r}."
            )
        self.dim, self.grid = int(dim), int(grid)
        self.min_offset, self.max_offset = int(min_offset), int(max_offset)
        self.offsets = tuple(range(self.min_offset, self.max_offset + 1))
        # One linear predictor per offset, built now so the optimizer sees its weights.
        predictors = []
        for k in self.offsets:
            layer = keras.layers.Dense(
                self.dim,
                use_bias=False,
                kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
                name=f"predict_k{k}",
            )
            layer.build((None, self.dim))
            predictors.append(layer)
        self._predictor_names = attach_in_order(self, predictors)
        self.built = True

    @property
    def predictors(self) -> list:
        return [getattr(self, n) for n in self._predictor_names]

    @property
    def metric_names(self) -> tuple:
        return tuple(f"cpc/k{k}" for k in self.offsets)

    def call(self, feats1: dict, feats2: dict, seed_generator=None) -> dict:
        z, c = feats1[Z], feats1[C]  # [b, G, G, D] each
        if z.shape[1] != self.grid:
            raise ValueError(
                f"CPCObjective was built for a {self.grid}x{self.grid} patch grid, "
                f"received z of shape {tuple(z.shape)}."
            )
        targets, offset = distribute.gather_global(z)  # [B, G, G, D]
        out = {}
        for k, predict in zip(self.offsets, self.predictors, strict=True):
            preds = predict(c[:, : self.grid - k])  # [b, G-k, G, D]
            out[f"cpc/k{k}"] = cpc_infonce(preds, targets, k, offset)
        out["total"] = sum(out.values()) / len(self.offsets)
        return out

    def get_config(self) -> dict:
        names = ("dim", "grid", "min_offset", "max_offset")
        return with_args(super().get_config(), self, names)
