"""Self-supervised objectives trained by `amdim_tf.model.SelfSupervisedModel`.

The objective protocol: `metric_names` (a tuple of "group/name" log keys besides
"loss/total") and `objective(feats1, feats2, seed_generator=...) -> dict` of
float32 scalars, "total" plus one entry per metric name, where feats1/feats2 are
the encoder's outputs for the two views. Objectives with trainable critics
(DIM, CPC) are `keras.layers.Layer`s whose weights are created at construction,
so the model tracks and optimises them; DIM's prior discriminator is exposed as
`adversary_variables` / `adversary_loss` and trained by the model's second
optimizer. Objectives are sized from the encoder's `feature_shapes`.
"""

from amdim_tf.objectives.amdim import AMDIMObjective, MixtureAMDIMObjective
from amdim_tf.objectives.cpc import CPCObjective
from amdim_tf.objectives.dim import DIMObjective

__all__ = [
    "AMDIMObjective",
    "CPCObjective",
    "DIMObjective",
    "MixtureAMDIMObjective",
    "build_objective",
]


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
