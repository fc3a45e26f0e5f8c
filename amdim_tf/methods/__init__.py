"""The methods: each one's encoder and objective, and how a run config picks them.

`amdim/` is AMDIM (Bachman et al. 2019): its padding-free ResNet encoder (r1, r5, r7)
and its multiscale InfoNCE objective (with the optional mixture of Sec. 3.4);
`dim/` is Deep InfoMax (Hjelm et al. 2019): its DCGAN-like encoder and its
JSD / NCE / DV objective with the prior-matching adversary; `cpc/` is CPC (van den Oord
et al. 2018): its patch encoder with a causal context network and its InfoNCE over
offsets. Each objective owns its estimator maths; `infonce.py` holds the pure
InfoNCE maths AMDIM, CPC and DIM's NCE estimator share, `nn.py` the layers and
initialisers of the official code, `features.py` the one global feature key.
Each method package names its features (`amdim.FEATURES`, `dim.FEATURES`,
`cpc.FEATURES`).

Encoders: images [B, S, S, 3] -> dict of named features, with `features.GLOBAL`
("r1") [B, 1, 1, D] always.
Every encoder exposes `image_size`, `n_rkhs` and `feature_shapes` (the (side, side,
channels) of each output, known before it is built), which is how objectives are sized.
Encoders and objectives are orthogonal: any objective whose feature keys an encoder
returns can train it (DIM runs on AMDIM's encoder, for instance).

The objective protocol: `metric_names` (a tuple of "group/name" log keys besides
"loss/total") and `objective(feats1, feats2, seed_generator=...) -> dict` of
float32 scalars, "total" plus one entry per metric name, where feats1/feats2 are
the encoder's outputs for the two views. Objectives are `keras.layers.Layer`s
whose weights (critics, predictors, mixture MLP) are created at construction, so
the model tracks and optimises them.

Auxiliary state (optional): an objective with variables that must *not* follow the
main loss (DIM's prior discriminator, an adversary) exposes
    `auxiliary_variables`: list of those variables (may be empty);
    `auxiliary_loss(feats1, seed_generator) -> float32 scalar` that trains them,
        computed from view 1's features, which it must read through stop_gradient;
    `auxiliary_metric`: the log key of that loss.
The model leaves them out of the main update and steps them with a second
optimizer of its own; the training step never names a method.
"""

import keras
import ml_collections

from amdim_tf.errors import UserError
from amdim_tf.methods import amdim, cpc, dim
from amdim_tf.methods.amdim.encoder import AMDIMEncoder
from amdim_tf.methods.amdim.objective import AMDIMObjective
from amdim_tf.methods.cpc.encoder import CPCEncoder
from amdim_tf.methods.cpc.objective import CPCObjective
from amdim_tf.methods.dim.encoder import DIMEncoder
from amdim_tf.methods.dim.objective import DIMObjective
from amdim_tf.methods.features import GLOBAL

__all__ = [
    "AMDIMEncoder",
    "AMDIMObjective",
    "CPCEncoder",
    "CPCObjective",
    "DIMEncoder",
    "DIMObjective",
    "build_encoder",
    "build_objective",
]

METHODS = ("amdim", "dim", "cpc")


def build_encoder(config: ml_collections.ConfigDict) -> AMDIMEncoder | DIMEncoder | CPCEncoder:
    """The (unbuilt) encoder a run config asks for: AMDIM's, or DIM's / CPC's own."""
    m, method = config.model, config.method
    if method == "amdim" or (method == "dim" and config.dim.encoder == "amdim"):
        return AMDIMEncoder(
            m.image_size, m.ndf, m.n_rkhs, m.n_depth, m.use_bn, m.synchronized_bn, name="encoder"
        )
    if method == "dim":
        if config.dim.encoder != "dim":
            raise UserError(
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
    raise UserError(f"Unknown config.method={method!r}; available: {METHODS}.")


def build_objective(
    config: ml_collections.ConfigDict, encoder: keras.Model
) -> AMDIMObjective | DIMObjective | CPCObjective:
    """The objective of `config.method`, sized for `encoder` (which need not be built)."""
    shapes = encoder.feature_shapes
    if config.method == "amdim":
        return AMDIMObjective(
            shapes[GLOBAL][-1],
            config.loss.tclip,
            config.loss.reg_coeff,
            n_mix=int(config.model.n_mix),
            hidden=config.model.mix_hidden,
            alpha=config.loss.mix_alpha,
            name="objective",
        )
    if config.method == "dim":
        d = config.dim
        local_key = (d.local_feature or amdim.R7) if d.encoder == "amdim" else dim.LOCAL
        if local_key not in shapes or local_key == GLOBAL:
            local_maps = [k for k, s in shapes.items() if s[0] > 1]
            raise UserError(
                f"config.dim.local_feature={local_key!r} is not a local map of "
                f"{type(encoder).__name__}; use one of {local_maps}."
            )
        return DIMObjective(
            shapes[GLOBAL][-1], shapes[local_key], d.estimator, d.alpha, d.beta, d.gamma,
            d.critic_units, d.summary_width, tuple(d.disc_hidden), d.gp_coeff,
            global_key=GLOBAL, local_key=local_key, cross_view=d.cross_view, name="objective",
        )  # fmt: skip
    if config.method == "cpc":
        c = config.cpc
        grid = shapes[cpc.Z][0]
        return CPCObjective(shapes[cpc.Z][-1], grid, c.min_offset, c.max_offset, name="objective")
    raise UserError(f"Unknown config.method={config.method!r}; available: amdim, dim, cpc.")
