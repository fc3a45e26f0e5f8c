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
The MI estimators (JSD, infoNCE, DV) are pure functions in `losses.py`.

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
from amdim_tf.methods import losses
from amdim_tf.methods.nn import TORCH_DEFAULT_KERNEL_INIT, shortcut_init, with_args

ESTIMATORS = {"jsd": losses.dim_jsd_loss, "nce": losses.dim_nce_loss, "dv": losses.dim_dv_loss}


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

    The prior discriminator is trained by the model's second optimizer on
    `adversary_loss`; its variables (`adversary_variables`) are excluded from the
    main update, while the encoder's non-saturating generator term is in "total".
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
        global_key="r1",
        local_key="local",
        cross_view=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"Unknown DIM estimator {estimator!r}; available: {sorted(ESTIMATORS)}."
            )
        if not (alpha or beta):
            raise ValueError(
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
    def metric_names(self):
        names = [("dim/global", self.alpha), ("dim/local", self.beta), ("dim/prior", self.gamma)]
        return tuple(n for n, w in names if w)

    @property
    def adversary_variables(self):
        return list(self.discriminator.trainable_variables) if self.gamma else []

    def call(self, feats1, feats2, seed_generator=None):
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
            loc, offset = distribute.gather_global(losses.flatten_locations(loc))  # [B, M*M, U]
            y_l = tf.cast(self.local_y_net(y), tf.float32)  # [b, U]
            scores = tf.einsum("bu,clu->bcl", y_l, loc)  # [b, B, M*M]
            out["dim/local"] = estimate(scores, offset)
            total += self.beta * out["dim/local"]
        if self.gamma:
            q = tf.sigmoid(tf.cast(y, tf.float32))  # [b, G] in (0, 1)
            out["dim/prior"] = losses.nonsaturating_generator_loss(self.discriminator(q))
            total += self.gamma * out["dim/prior"]
        out["total"] = total
        return out

    def adversary_loss(self, feats1, seed_generator):
        """Discriminator loss: prior samples U[0,1]^d vs stop_gradient(sigmoid(Y)), plus the
        official contrastive gradient penalty 0.5 * (E ||dD/dp||^2 + E ||dD/dq||^2)."""
        # stop_gradient: this loss trains the discriminator only, never the encoder.
        q = tf.stop_gradient(
            tf.sigmoid(tf.cast(_flat(feats1[self.global_key]), tf.float32))
        )  # [b, G]
        p = keras.random.uniform(tf.shape(q), 0.0, 1.0, seed=seed_generator)  # [b, G]
        d_p, gp_p = self._logits_and_grad_norm(p)  # [b, 1], []
        d_q, gp_q = self._logits_and_grad_norm(q)  # [b, 1], []
        return losses.prior_discriminator_loss(d_p, d_q) + self.gp_coeff * 0.5 * (gp_p + gp_q)

    def _logits_and_grad_norm(self, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = tf.cast(self.discriminator(x), tf.float32)  # [b, 1]
        grad = tape.gradient(logits, x)  # [b, G]
        return logits, tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=1))

    def get_config(self):
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
