"""Deep InfoMax's objective: global and local MI maximisation plus prior matching.

Hjelm et al., "Learning deep representations by mutual information estimation
and maximization", ICLR 2019, §3 (eq. 7: alpha * I_global + beta * mean over
locations of I_local + gamma * prior matching) and the official code
(github.com/rdevon/DIM: `cortex_DIM/models/dim.py`, `nn_modules/mi_networks.py`,
`models/prior_matching.py`, `functions/gradient_penalty.py`).

Critic: "encode and dot product" (paper appendix A.2). The local map M goes
through a 1x1-conv net with a linear shortcut (official `MI1x1ConvNet`), Y
through an FC net with a linear shortcut (`MIFCNet`), and the score of a
(Y, location) pair is their dot product. Global DIM scores Y against a learned
summary of the whole map M (a strided conv and a Dense over the flattened map,
like the official GlobalDIM, which re-applies the encoder's later layers to M).
This module owns DIM's maths: the MI estimators (JSD, infoNCE, DV) and the
prior-matching GAN losses are pure functions of tensors at its top, each checked
against a NumPy formula; the InfoNCE masking they share with AMDIM is
`methods.infonce`.

One view: DIM, as in the paper, maximises MI between an image's Y and its own
local features, so `feats2` is ignored unless `cross_view=True` (Y of view 1
against the map of view 2, an augmented-DIM variant close to AMDIM's 1->7).

Deviation: the official MI nets use BatchNorm; ours use LayerNorm because the
objective is called without a `training` flag (BN would run on stale moving
statistics) and batch statistics would let the critic see the negatives.
"""

import keras
import tensorflow as tf

from amdim_tf import distribute
from amdim_tf.errors import UserError
from amdim_tf.methods import infonce
from amdim_tf.methods.dim import LOCAL
from amdim_tf.methods.features import GLOBAL
from amdim_tf.methods.nn import TORCH_DEFAULT_KERNEL_INIT, shortcut_init, with_args

# -- The estimators ------------------------------------------------------------------------
# Hjelm et al., ICLR 2019, §3.1 and the official code's `cortex_DIM/functions/dim_losses.py`.
# They take critic scores scores[i, c, l] = T(global of image i, location l of image c)
# for the b source images of this replica against the B target images of the global
# batch; the positive pair of source i is target c = i + pos_offset. Each returns a
# loss to *minimise* (the negated MI lower bound), in float32.

_LOG2 = 0.6931471805599453


def dim_jsd_loss(scores, pos_offset=0):
    """Negated Jensen-Shannon MI estimator of DIM (the paper's default, eq. 4).

    E_pos = mean over positive (i, l) of log 2 - softplus(-u),
    E_neg = mean over negative (i, c != i, l) of softplus(u) - log 2,
    loss = E_neg - E_pos (as the official `fenchel_dual_loss` with 'JSD').

    Args:
        scores: [b, B, L] critic scores (L = 1 for global DIM).
        pos_offset: index in the B targets of this replica's first image.
    Returns:
        float32 scalar.
    """
    scores = tf.cast(scores, tf.float32)  # [b, B, L]
    is_pos = infonce.positive_mask(scores, pos_offset)  # [b, B]
    e_pos = tf.reduce_mean(
        _LOG2 - tf.nn.softplus(-infonce.positive_scores(scores, pos_offset))
    )  # []
    neg_terms = tf.nn.softplus(scores) - _LOG2  # [b, B, L]
    neg_w = tf.cast(~is_pos, tf.float32)[:, :, None] * tf.ones_like(scores)  # [b, B, L]
    e_neg = tf.reduce_sum(neg_terms * neg_w) / tf.maximum(tf.reduce_sum(neg_w), 1.0)  # []
    return e_neg - e_pos


def dim_dv_loss(scores, pos_offset=0):
    """Negated Donsker-Varadhan MI bound of DIM (MINE's estimator, eq. 2).

    E_pos = mean over positive (i, l) of u; E_neg = log mean over all negative
    (i, c != i, l) of exp(u), one log-mean-exp over the whole batch as the
    official `donsker_varadhan_loss`, but through logsumexp with the positives
    excluded exactly (the official code subtracts 100 from them instead).
    loss = E_neg - E_pos. Over several replicas each replica computes its own
    log-mean-exp, so the averaged loss is not the global-batch DV bound.

    Args / returns: as `dim_jsd_loss`.
    """
    scores = tf.cast(scores, tf.float32)  # [b, B, L]
    is_pos = infonce.positive_mask(scores, pos_offset)  # [b, B]
    e_pos = tf.reduce_mean(infonce.positive_scores(scores, pos_offset))  # []
    neg = tf.where(is_pos[:, :, None], tf.constant(-float("inf")), scores)  # [b, B, L]
    n_neg = tf.reduce_sum(tf.cast(~is_pos, tf.float32)) * tf.cast(tf.shape(scores)[2], tf.float32)
    tf.debugging.assert_positive(
        n_neg,
        message="DIM's DV estimator needs at least 2 images in the (global) batch for negatives.",
    )
    e_neg = tf.reduce_logsumexp(neg) - tf.math.log(n_neg)  # []
    return e_neg - e_pos


def dim_nce_loss(scores, pos_offset=0):
    """Negated infoNCE estimator of DIM (eq. 5, the official `nce_loss`).

    `masked_infonce` on the critic scores as they are: unlike AMDIM's `infonce`,
    DIM's scores are neither scaled by 1/sqrt(D) nor clipped.

    Args / returns: as `dim_jsd_loss`.
    """
    return infonce.masked_infonce(scores, pos_offset)


def prior_discriminator_loss(d_prior, d_encoded):
    """Discriminator side of DIM's prior matching (GAN measure, official `Discriminator`).

    -(E_P[-softplus(-D(p))] - E_Q[softplus(D(q))]) = mean softplus(-D(p)) + mean softplus(D(q)):
    the binary cross-entropy of telling prior samples (label 1) from encoded ones (label 0).
    Args: d_prior [N, 1], d_encoded [M, 1] logits. Returns a float32 scalar.
    """
    d_prior = tf.cast(d_prior, tf.float32)  # [N, 1]
    d_encoded = tf.cast(d_encoded, tf.float32)  # [M, 1]
    return tf.reduce_mean(tf.nn.softplus(-d_prior)) + tf.reduce_mean(tf.nn.softplus(d_encoded))


def nonsaturating_generator_loss(d_encoded):
    """Encoder side of prior matching: -mean log sigmoid(D(q)) = mean softplus(-D(q)).

    The non-saturating GAN generator loss (Goodfellow et al. 2014), as the
    official `generator_loss(..., 'non-saturating')`. Returns a float32 scalar.
    """
    return tf.reduce_mean(tf.nn.softplus(-tf.cast(d_encoded, tf.float32)))


ESTIMATORS = {"jsd": dim_jsd_loss, "nce": dim_nce_loss, "dv": dim_dv_loss}


def local_critic(channels, units, name="local_critic"):
    """[B, M, M, C] -> [B, M, M, units]: LN(conv1x1-LN-ReLU-conv1x1(x) + shortcut(x)) (MI1x1ConvNet)."""
    x = keras.Input((None, None, channels))
    h = keras.layers.Conv2D(units, 1, use_bias=False, kernel_initializer=TORCH_DEFAULT_KERNEL_INIT)(
        x
    )
    h = keras.layers.ReLU()(keras.layers.LayerNormalization()(h))
    h = keras.layers.Conv2D(units, 1, kernel_initializer=TORCH_DEFAULT_KERNEL_INIT)(h)
    s = keras.layers.Conv2D(
        units, 1, use_bias=False, kernel_initializer=shortcut_init(channels, units), name="shortcut"
    )(x)
    out = keras.layers.LayerNormalization()(keras.layers.Add()([h, s]))
    return keras.Model(x, out, name=name)


def global_critic(dim, units, name="global_critic"):
    """[B, dim] -> [B, units]: Dense-LN-ReLU-Dense(y) + shortcut(y) (MIFCNet)."""
    y = keras.Input((dim,))
    h = keras.layers.Dense(units, kernel_initializer=TORCH_DEFAULT_KERNEL_INIT)(y)
    h = keras.layers.ReLU()(keras.layers.LayerNormalization()(h))
    h = keras.layers.Dense(units, kernel_initializer=TORCH_DEFAULT_KERNEL_INIT)(h)
    s = keras.layers.Dense(
        units, use_bias=False, kernel_initializer=shortcut_init(dim, units), name="shortcut"
    )(y)
    return keras.Model(y, keras.layers.Add()([h, s]), name=name)


def map_summary_critic(local_shape, width, units, name="map_summary_critic"):
    """[B, M, M, C] -> [B, units]: conv4x4/2(width)-LN-ReLU, flatten, Dense-LN-ReLU-Dense.

    Global DIM's view of "the whole image": one vector per image, so that Y is
    scored against the full map rather than against single locations.
    """
    m = keras.Input(tuple(local_shape))
    h = keras.layers.Conv2D(
        width, 4, strides=2, padding="same", kernel_initializer=TORCH_DEFAULT_KERNEL_INIT
    )(m)
    h = keras.layers.ReLU()(keras.layers.LayerNormalization()(h))
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(units, kernel_initializer=TORCH_DEFAULT_KERNEL_INIT)(h)
    h = keras.layers.ReLU()(keras.layers.LayerNormalization()(h))
    h = keras.layers.Dense(units, kernel_initializer=TORCH_DEFAULT_KERNEL_INIT)(h)
    return keras.Model(m, h, name=name)


def prior_discriminator(dim, hidden=(1000, 200), name="prior_discriminator"):
    """[B, dim] -> [B, 1] logits: the official 1000-200-1 ReLU MLP."""
    return keras.Sequential(
        [keras.Input((dim,))]
        + [
            keras.layers.Dense(h, activation="relu", kernel_initializer=TORCH_DEFAULT_KERNEL_INIT)
            for h in hidden
        ]
        + [keras.layers.Dense(1, kernel_initializer=TORCH_DEFAULT_KERNEL_INIT)],
        name=name,
    )


def _flat(x):
    return tf.reshape(x, [tf.shape(x)[0], -1])  # [B, D]


@keras.saving.register_keras_serializable(package="amdim_tf")
class DIMObjective(keras.layers.Layer):
    """alpha * global MI + beta * local MI + gamma * prior matching (DIM, eq. 7).

    Presets: DIM(G) alpha=1, beta=0, gamma=1; DIM(L) alpha=0, beta=1, gamma=0.1.
    A term with weight 0 is neither built nor computed nor logged.

    Args:
        global_dim: width of Y (the encoder's r1).
        local_shape: (M, M, C) of the local map.
        estimator: "jsd" (paper default), "nce" or "dv".
        alpha, beta, gamma: weights of global MI, local MI and prior matching.
        critic_units: width of the critic embeddings (2048 in the paper).
        summary_width: channels of the global critic's strided conv over M.
        disc_hidden: hidden widths of the prior discriminator (1000, 200).
        gp_coeff: weight of the discriminator's gradient penalty (official 1.0).
        global_key, local_key: feature names of Y and M in the encoder's dict.
        cross_view: score view-1 Y against view-2 features (default: one view).

    Call: (feats1, feats2, seed_generator) -> dict of float32 scalars "total"
    plus "dim/global", "dim/local", "dim/prior" for the active terms.

    The prior discriminator is the objective's auxiliary state (the protocol of
    `amdim_tf.methods`): `auxiliary_variables` are excluded from the main update and
    trained by the model's second optimizer on `auxiliary_loss`, logged as
    `auxiliary_metric`; the encoder's non-saturating generator term is in "total".
    """

    def __init__(
        self,
        global_dim,
        local_shape,
        estimator="jsd",
        alpha=0.0,
        beta=1.0,
        gamma=0.1,
        critic_units=2048,
        summary_width=256,
        disc_hidden=(1000, 200),
        gp_coeff=1.0,
        global_key=GLOBAL,
        local_key=LOCAL,
        cross_view=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if estimator not in ESTIMATORS:
            raise UserError(
                f"Unknown DIM estimator {estimator!r}; available: {sorted(ESTIMATORS)}."
            )
        if not (alpha or beta):
            raise UserError(
                f"DIM needs alpha > 0 or beta > 0 (an MI term), received "
                f"alpha={alpha!r}, beta={beta!r}."
            )
        self.global_dim = int(global_dim)
        self.local_shape = tuple(int(s) for s in local_shape)
        self.estimator = estimator
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.critic_units = critic_units
        self.summary_width = summary_width
        self.disc_hidden = tuple(disc_hidden)
        self.gp_coeff = gp_coeff
        self.global_key, self.local_key = global_key, local_key
        self.cross_view = cross_view
        # Every variable is created here, so the model and its optimizers see them
        # before the first step (the adversary must be known when the model is built).
        if self.alpha:
            self.summary_net = map_summary_critic(self.local_shape, summary_width, critic_units)
            self.global_y_net = global_critic(self.global_dim, critic_units, name="global_y_critic")
        if self.beta:
            self.local_net = local_critic(self.local_shape[-1], critic_units)
            self.local_y_net = global_critic(self.global_dim, critic_units, name="local_y_critic")
        if self.gamma:
            self.discriminator = prior_discriminator(self.global_dim, self.disc_hidden)
        self.built = True

    @property
    def metric_names(self) -> tuple:
        names = [("dim/global", self.alpha), ("dim/local", self.beta), ("dim/prior", self.gamma)]
        return tuple(n for n, w in names if w)

    # The log name of `auxiliary_loss`: the discriminator's loss, as runs have logged it.
    auxiliary_metric = "loss/adversary"

    @property
    def auxiliary_variables(self) -> list:
        """The prior discriminator's variables (none when gamma = 0)."""
        return list(self.discriminator.trainable_variables) if self.gamma else []

    def call(self, feats1: dict, feats2: dict, seed_generator=None) -> dict:
        estimate = ESTIMATORS[self.estimator]
        target_feats = feats2 if self.cross_view else feats1
        y = _flat(feats1[self.global_key])  # [b, G]
        local_map = target_feats[self.local_key]  # [b, M, M, C]
        if tuple(local_map.shape[1:]) != self.local_shape:
            raise ValueError(
                f"DIMObjective was built for a local map of shape {self.local_shape}, "
                f"received feature {self.local_key!r} of shape {tuple(local_map.shape)}."
            )
        out, total = {}, 0.0
        if self.alpha:
            summary = tf.cast(self.summary_net(local_map), tf.float32)  # [b, U]
            summary, offset = distribute.gather_global(summary)  # [B, U]
            y_g = tf.cast(self.global_y_net(y), tf.float32)  # [b, U]
            scores = tf.einsum("bu,cu->bc", y_g, summary)[:, :, None]  # [b, B, 1]
            out["dim/global"] = estimate(scores, offset)
            total += self.alpha * out["dim/global"]
        if self.beta:
            loc = tf.cast(self.local_net(local_map), tf.float32)  # [b, M, M, U]
            loc, offset = distribute.gather_global(infonce.flatten_locations(loc))  # [B, M*M, U]
            y_l = tf.cast(self.local_y_net(y), tf.float32)  # [b, U]
            scores = tf.einsum("bu,clu->bcl", y_l, loc)  # [b, B, M*M]
            out["dim/local"] = estimate(scores, offset)
            total += self.beta * out["dim/local"]
        if self.gamma:
            q = tf.sigmoid(tf.cast(y, tf.float32))  # [b, G] in (0, 1)
            out["dim/prior"] = nonsaturating_generator_loss(self.discriminator(q))
            total += self.gamma * out["dim/prior"]
        out["total"] = total
        return out

    def auxiliary_loss(self, feats1: dict, seed_generator) -> tf.Tensor:
        """Discriminator loss: prior samples U[0,1]^d vs stop_gradient(sigmoid(Y)), plus the
        official contrastive gradient penalty 0.5 * (E ||dD/dp||^2 + E ||dD/dq||^2)."""
        # stop_gradient: this loss trains the discriminator only, never the encoder.
        q = tf.stop_gradient(
            tf.sigmoid(tf.cast(_flat(feats1[self.global_key]), tf.float32))
        )  # [b, G]
        p = keras.random.uniform(tf.shape(q), 0.0, 1.0, seed=seed_generator)  # [b, G]
        d_p, gp_p = self._logits_and_grad_norm(p)  # [b, 1], []
        d_q, gp_q = self._logits_and_grad_norm(q)  # [b, 1], []
        return prior_discriminator_loss(d_p, d_q) + self.gp_coeff * 0.5 * (gp_p + gp_q)

    def _logits_and_grad_norm(self, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = tf.cast(self.discriminator(x), tf.float32)  # [b, 1]
        grad = tape.gradient(logits, x)  # [b, G]
        return logits, tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=1))

    def get_config(self) -> dict:
        names = (
            "global_dim",
            "local_shape",
            "estimator",
            "alpha",
            "beta",
            "gamma",
            "critic_units",
            "summary_width",
            "disc_hidden",
            "gp_coeff",
            "global_key",
            "local_key",
            "cross_view",
        )
        return with_args(super().get_config(), self, names)
