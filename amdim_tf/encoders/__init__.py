"""Encoders: images [B, S, S, 3] -> dict of named features, with "r1" [B, 1, 1, D] always.

`amdim.py` is AMDIM's padding-free ResNet with its critic heads (r1, r5, r7);
`dim.py` is Deep InfoMax's DCGAN-like encoder (r1 = Y, a local map);
`cpc.py` is CPC's patch encoder with a causal context network (r1, z, c).
Encoders and objectives are orthogonal: any objective whose feature keys an
encoder returns can train it (DIM runs on AMDIM's encoder, for instance).
Every encoder exposes `image_size`, `n_rkhs` and `feature_shapes` (the
(side, side, channels) of each output, known before it is built), which is
how objectives are sized.
"""

from amdim_tf.encoders.amdim import AMDIMEncoder
from amdim_tf.encoders.cpc import CPCEncoder
from amdim_tf.encoders.dim import DIMEncoder

__all__ = ["AMDIMEncoder", "CPCEncoder", "DIMEncoder", "build_encoder"]

METHODS = ("amdim", "dim", "cpc")


def build_encoder(config) -> AMDIMEncoder | DIMEncoder | CPCEncoder:
    """The (unbuilt) encoder a run config asks for: AMDIM's, or DIM's / CPC's own."""
    m, method = config.model, config.method
    if method == "amdim" or (method == "dim" and config.dim.encoder == "amdim"):
        return AMDIMEncoder(
            m.image_size, m.ndf, m.n_rkhs, m.n_depth, m.use_bn, m.synchronized_bn, name="encoder"
        )
    if method == "dim":
        if config.dim.encoder != "dim":
            raise ValueError(
                f"Unknown config.dim.encoder={config.dim.encoder!r}; available: 'dim', 'amdim'."
            )
        d = config.dim
        return DIMEncoder(
            m.image_size, m.ndf, m.n_rkhs, d.fc_units, d.local_layer, m.synchronized_bn,
            name="encoder",
        )  # fmt: skip
    if method == "cpc":
        c = config.cpc
        return CPCEncoder(
            m.image_size, m.ndf, m.n_rkhs, c.patch_size, c.patch_stride, c.context_blocks,
            name="encoder",
        )  # fmt: skip
    raise ValueError(f"Unknown config.method={method!r}; available: {METHODS}.")
