"""The methods: each one's encoder and objective, and how a run config picks them.

`amdim/` is AMDIM (Bachman et al. 2019): its padding-free ResNet encoder (r1, r5, r7)
and its multiscale InfoNCE objective (with the optional mixture of Sec. 3.4);
`dim/` is Deep InfoMax (Hjelm et al. 2019): its DCGAN-like encoder and its
JSD / NCE / DV objective with the prior-matching adversary; `cpc/` is CPC (van den Oord
et al. 2018): its patch encoder with a causal context network and its InfoNCE over
offsets. `losses.py` holds the pure maths shared by their objectives, `nn.py` the
layers and initialisers of the official code.

Encoders: images [B, S, S, 3] -> dict of named features, with "r1" [B, 1, 1, D] always.
Every encoder exposes `image_size`, `n_rkhs` and `feature_shapes` (the (side, side,
channels) of each output, known before it is built), which is how objectives are sized.
Encoders and objectives are orthogonal: any objective whose feature keys an encoder
returns can train it (DIM runs on AMDIM's encoder, for instance).

The objective protocol: `metric_names` (a tuple of "group/name" log keys besides
"loss/total") and `objective(feats1, feats2, seed_generator=...) -> dict` of
float32 scalars, "total" plus one entry per metric name, where feats1/feats2 are
the encoder's outputs for the two views. Objectives with trainable critics
(DIM, CPC) are `keras.layers.Layer`s whose weights are created at construction,
so the model tracks and optimises them; DIM's prior discriminator is exposed as
`adversary_variables` / `adversary_loss` and trained by the model's second
optimizer.
"""

from amdim_tf.methods.amdim.encoder import AMDIMEncoder
from amdim_tf.methods.amdim.objective import AMDIMObjective, MixtureAMDIMObjective
from amdim_tf.methods.cpc.encoder import CPCEncoder
from amdim_tf.methods.cpc.objective import CPCObjective
from amdim_tf.methods.dim.encoder import DIMEncoder
from amdim_tf.methods.dim.objective import DIMObjective

__all__ = [
    "AMDIMEncoder",
    "AMDIMObjective",
    "CPCEncoder",
    "CPCObjective",
    "DIMEncoder",
    "DIMObjective",
    "MixtureAMDIMObjective",
    "build_encoder",
    "build_objective",
]

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


def build_objective(
    config, encoder
) -> AMDIMObjective | MixtureAMDIMObjective | DIMObjective | CPCObjective:
    """The objective of `config.method`, sized for `encoder` (which need not be built)."""
    shapes = encoder.feature_shapes
    if config.method == "amdim":
        n_mix = int(config.model.n_mix)
        if n_mix < 0:
            raise ValueError(f"config.model.n_mix must be >= 0 (0 = off), received {n_mix}.")
        if n_mix == 0:
            return AMDIMObjective(config.loss.tclip, config.loss.reg_coeff)
        return MixtureAMDIMObjective(
            shapes["r1"][-1],
            n_mix,
            hidden=config.model.mix_hidden,
            alpha=config.loss.mix_alpha,
            tclip=config.loss.tclip,
            reg_coeff=config.loss.reg_coeff,
            name="objective",
        )
    if config.method == "dim":
        d = config.dim
        local_key = (d.local_feature or "r7") if d.encoder == "amdim" else "local"
        if local_key not in shapes or local_key == "r1":
            local_maps = [k for k, s in shapes.items() if s[0] > 1]
            raise ValueError(
                f"config.dim.local_feature={local_key!r} is not a local map of "
                f"{type(encoder).__name__}; use one of {local_maps}."
            )
        return DIMObjective(
            shapes["r1"][-1], shapes[local_key], d.estimator, d.alpha, d.beta, d.gamma,
            d.critic_units, d.summary_width, tuple(d.disc_hidden), d.gp_coeff,
            global_key="r1", local_key=local_key, cross_view=d.cross_view, name="objective",
        )  # fmt: skip
    if config.method == "cpc":
        c = config.cpc
        grid = shapes["z"][0]
        return CPCObjective(shapes["z"][-1], grid, c.min_offset, c.max_offset, name="objective")
    raise ValueError(f"Unknown config.method={config.method!r}; available: amdim, dim, cpc.")
