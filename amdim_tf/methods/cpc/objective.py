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
independent of how many rows are predicted.
"""

import keras

from amdim_tf import distribute
from amdim_tf.methods import losses
from amdim_tf.methods.nn import TORCH_DEFAULT_KERNEL_INIT, attach_in_order, with_args


@keras.saving.register_keras_serializable(package="amdim_tf")
class CPCObjective(keras.layers.Layer):
    """InfoNCE of predicting z_{i+k, j} from c_{i, j}, k = min_offset ... max_offset.

    Args:
        dim: width of z and c (the encoder's n_rkhs).
        grid: side of the patch grid (7 by default); rows i < grid - k predict.
        min_offset, max_offset: predicted row offsets (2 and 5 by default).

    Call: (feats1, feats2, seed_generator) -> dict of float32 scalars "total"
    (mean over offsets) and "cpc/k{k}" per offset.
    """

    def __init__(self, dim, grid, min_offset=2, max_offset=5, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= min_offset <= max_offset < grid:
            raise ValueError(
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
    def predictors(self):
        return [getattr(self, n) for n in self._predictor_names]

    @property
    def metric_names(self):
        return tuple(f"cpc/k{k}" for k in self.offsets)

    def call(self, feats1, feats2, seed_generator=None):
        z, c = feats1["z"], feats1["c"]  # [b, G, G, D] each
        if z.shape[1] != self.grid:
            raise ValueError(
                f"CPCObjective was built for a {self.grid}x{self.grid} patch grid, "
                f"received z of shape {tuple(z.shape)}."
            )
        targets, offset = distribute.gather_global(z)  # [B, G, G, D]
        out = {}
        for k, predict in zip(self.offsets, self.predictors, strict=True):
            preds = predict(c[:, : self.grid - k])  # [b, G-k, G, D]
            out[f"cpc/k{k}"] = losses.cpc_infonce(preds, targets, k, offset)
        out["total"] = sum(out.values()) / len(self.offsets)
        return out

    def get_config(self):
        names = ("dim", "grid", "min_offset", "max_offset")
        return with_args(super().get_config(), self, names)
