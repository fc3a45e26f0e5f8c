"""AMDIM's objective: multiscale InfoNCE across two augmented views (§3.2-3.3), with mixtures (§3.7).

Bachman, Hjelm & Buchwalter (2019) and the official code's `costs.py`
(`NCE_MI_MULTI`). Three pairs of scales, each in both directions x1 -> x2 and
x2 -> x1:

    1 -> 5   the global feature r1 of one view predicts every r5 location of the other;
    1 -> 7   r1 predicts every r7 location of the other view;
    5 -> 5   one random r5 location of one view predicts every r5 location of the other.

Negatives are every location of every *other* image of the global batch: the
targets are gathered over replicas, so adding replicas never weakens the
objective. The shared tensor maths (scaled, clipped scores, the penalty, the masked
softmax) is `methods.infonce`; the mixture's entropy-regularised assignment
(`mixture_nce`, §3.7) is AMDIM's own and lives here. This module owns both: the
plain objective is `AMDIMObjective` with n_mix = 0, the mixture the same layer
with n_mix >= 1 components.
"""

import keras
import tensorflow as tf

from amdim_tf import distribute
from amdim_tf.errors import UserError
from amdim_tf.methods import infonce
from amdim_tf.methods.amdim import R1, R5, R7
from amdim_tf.methods.features import flat_global
from amdim_tf.methods.nn import TORCH_DEFAULT_KERNEL_INIT, torch_default_bias_init

N_R5_LOCATIONS = 25  # the 5x5 map
METRIC_NAMES = ("nce/1t5", "nce/1t7", "nce/5t5", "loss/reg")


def mixture_nce(log_probs: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """The entropy-regularised best assignment of locations to components (§3.7).

    Per location i, max over q in the simplex of sum_j q_j s_j + alpha * H(q)
    is attained at q = softmax_j(s_j / alpha) and equals
    alpha * logsumexp_j(s_j / alpha). We subtract alpha * log k, so that the
    objective equals s when every component scores s (a k-component mixture that
    has not split yet scores as the base NCE); it lies between mean_j s_j and
    max_j s_j, and tends to max_j s_j as alpha -> 0. With alpha = 1 it is
    log(mean_j p_j), the log-likelihood of the positive under a uniform mixture
    of the k components' NCE classifiers.

    Args:
        log_probs: [..., k] per-component NCE log-probabilities s_j.
        alpha: entropy weight, > 0.
    Returns:
        (objective, q): [...] float32 to maximise, and [..., k] float32, q summing to 1.
    """
    s = tf.cast(log_probs, tf.float32)  # [..., k]
    k = tf.cast(tf.shape(s)[-1], tf.float32)  # []
    scaled = s / alpha  # [..., k]
    objective = alpha * (tf.reduce_logsumexp(scaled, axis=-1) - tf.math.log(k))  # [...]
    q = tf.nn.softmax(scaled, axis=-1)  # [..., k]
    return objective, q


@keras.saving.register_keras_serializable(package="amdim_tf")
# Configs serialised before the plain and mixture objectives became one layer name
# the mixture "MixtureAMDIMObjective"; its arguments are this layer's, so it loads here.
@keras.saving.register_keras_serializable(package="amdim_tf", name="MixtureAMDIMObjective")
class AMDIMObjective(keras.layers.Layer):
    """nce/1t5 + nce/1t7 + nce/5t5 + loss/reg, each NCE averaged over both directions.

    With n_mix = 0 (the paper's AMDIM) the antecedent of 1->5 and 1->7 is r1 itself
    and the layer has no weights. With n_mix = k >= 1 (mixture-based
    representations, §3.7), from each antecedent r1 (f1) of a view a
    one-hidden-layer ReLU MLP with a residual connection makes k mixture features
    f1^j = f1 + MLP(f1)_j (the MLP is shared by both views and its output holds
    the k components side by side). For each consequent location i of the other
    view (its r5 and r7 targets), s_j(i) is the NCE log-softmax score of the
    positive when f1^j is the antecedent, against the same negatives as the plain
    objective (every location of every other image of the global batch, scored by
    f1^j). Per location we maximise sum_j q_j(i) s_j(i) + alpha * H(q(i)), whose
    optimum q(i) = softmax_j(s_j(i) / alpha) makes it alpha * logsumexp_j(s_j(i) /
    alpha); minus alpha * log k, so it equals the base NCE when all components
    agree (`mixture_nce`). The q are the optimum, not a network: the envelope
    theorem makes the gradient through them zero, so no stop_gradient is needed.
    nce/1t5 and nce/1t7 are then the negated mean of that objective over
    locations, images and both view directions; nce/5t5 and the score penalty
    (over every component's raw scores) are as without mixture.

    The MLP's last layer has PyTorch's default random init, not zeros: with equal
    components every component receives the same gradient, so zero-initialised
    components would stay identical for ever. With k = 1 and that layer zeroed,
    the objective is the plain one exactly (tested); with k = 1 in general it
    is AMDIM with the antecedent f1 + MLP(f1).

    Args:
        dim: width of r1, r5 and r7 (the encoder's n_rkhs).
        tclip: soft clip of the NCE scores (config.loss.tclip).
        reg_coeff: weight of the mean squared raw score, the logit penalty
            (config.loss.reg_coeff).
        n_mix: k, the number of mixture components (config.model.n_mix; 0 = off).
        hidden: width of the MLP's hidden layer (config.model.mix_hidden; 0 = dim).
        alpha: entropy weight of q, > 0 (config.loss.mix_alpha; needed when n_mix >= 1);
            alpha -> 0 takes the best component per location, large alpha the mean
            over components, 1 makes the objective log(mean_j p_j), the
            log-likelihood of a uniform mixture.

    Call: (feats1, feats2, seed_generator=...) with the encoder outputs of each
    view ("r1" [b,1,1,D], "r5" [b,5,5,D], "r7" [b,7,7,D]) -> dict of float32
    scalars "total" and one per `metric_names`. "loss/reg" is half the sum of the
    six per-direction penalties, as the official code. With n_mix >= 1,
    "mix/entropy" is the mean entropy of q over the 1->5 and 1->7 locations of
    both directions, in units of log k (1 = every location split evenly, 0 = each
    taken by one component; 0 when k = 1). Scores, q and the MLP are float32
    under every precision policy.
    """

    def __init__(
        self,
        dim: int,
        tclip: float | None,
        reg_coeff: float,
        n_mix: int = 0,
        hidden: int = 0,
        alpha: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(n_mix) < 0:
            raise UserError(f"config.model.n_mix must be >= 0 (0 = off), received {n_mix!r}.")
        if int(n_mix) and not (alpha is not None and float(alpha) > 0):
            raise UserError(
                f"config.loss.mix_alpha must be > 0 (the entropy weight), received {alpha!r}; "
                "a small value such as 0.01 approximates the hard max over components."
            )
        self.dim, self.n_mix, self.hidden = int(dim), int(n_mix), int(hidden)
        self.alpha = None if alpha is None else float(alpha)
        self.tclip, self.reg_coeff = tclip, reg_coeff
        if self.n_mix:
            self._build_mixture()
        self.built = True

    def _build_mixture(self):
        width = self.hidden or self.dim
        # Built now so the optimizer sees the weights (they draw after the encoder's
        # critics, before model.build(): n_mix = 0 never creates them). float32 layers:
        # a mixed policy would round the components to bfloat16 before the scores.
        self.mix_hidden = keras.layers.Dense(
            width,
            activation="relu",
            kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
            bias_initializer=torch_default_bias_init(self.dim),
            dtype="float32",
            name="mix_hidden",
        )
        self.mix_hidden.build((None, self.dim))
        self.mix_out = keras.layers.Dense(
            self.n_mix * self.dim,
            kernel_initializer=TORCH_DEFAULT_KERNEL_INIT,
            bias_initializer=torch_default_bias_init(width),
            dtype="float32",
            name="mix_out",
        )
        self.mix_out.build((None, width))

    @property
    def metric_names(self) -> tuple:
        return METRIC_NAMES + (("mix/entropy",) if self.n_mix else ())

    def components(self, r1: tf.Tensor) -> tf.Tensor:
        """r1 [b, D] (any float dtype) -> the k mixture features [b, k, D], float32 (n_mix >= 1)."""
        f1 = tf.cast(r1, tf.float32)  # [b, D]
        delta = self.mix_out(self.mix_hidden(f1))  # [b, k*D]
        delta = tf.reshape(delta, [-1, self.n_mix, self.dim])  # [b, k, D]
        return f1[:, None, :] + delta  # [b, k, D]

    def call(self, feats1: dict, feats2: dict, seed_generator=None) -> dict:
        trg1, trg2, offset = _global_targets(feats1, feats2)
        r5_1, r5_2 = _r5_sources(feats1, feats2, trg1, offset, seed_generator)

        def nce(src, trg):  # (loss, reg) of one direction
            return infonce.infonce(src, trg, self.tclip, self.reg_coeff, offset)  # [], []

        if self.n_mix:
            mix_1 = self.components(flat_global(feats1))  # [b, k, D]
            mix_2 = self.components(flat_global(feats2))  # [b, k, D]

            def global_nce(src, trg):  # (loss, reg, mean entropy of q) of one direction
                log_probs, reg = infonce.infonce_component_log_probs(
                    src, trg, self.tclip, self.reg_coeff, offset
                )  # [b, L, k], []
                objective, q = mixture_nce(log_probs, self.alpha)  # [b, L], [b, L, k]
                return -tf.reduce_mean(objective), reg, tf.reduce_mean(_entropy(q))  # [], [], []

            src_1, src_2 = mix_1, mix_2
        else:
            src_1, src_2 = flat_global(feats1), flat_global(feats2)  # [b, D] each
            global_nce = nce

        pairs = {  # name: (x1 -> x2, x2 -> x1)
            "nce/1t5": (global_nce(src_1, trg2[R5]), global_nce(src_2, trg1[R5])),
            "nce/1t7": (global_nce(src_1, trg2[R7]), global_nce(src_2, trg1[R7])),
            "nce/5t5": (nce(r5_1, trg2[R5]), nce(r5_2, trg1[R5])),
        }
        out = {name: 0.5 * (a[0] + b[0]) for name, (a, b) in pairs.items()}  # [] each
        out["loss/reg"] = 0.5 * tf.add_n([a[1] + b[1] for a, b in pairs.values()])  # []
        out["total"] = out["nce/1t5"] + out["nce/1t7"] + out["nce/5t5"] + out["loss/reg"]  # []
        if self.n_mix:
            entropies = [d[2] for name in ("nce/1t5", "nce/1t7") for d in pairs[name]]  # 4 x []
            log_k = tf.math.log(tf.cast(self.n_mix, tf.float32))  # []
            out["mix/entropy"] = tf.math.divide_no_nan(tf.add_n(entropies) / 4.0, log_k)  # []
        return out

    def location_scores(self, feats1: dict, feats2: dict) -> dict:
        """Per-location NCE scores of view 1's r1 against view 2's r5 and r7 (for plots).

        Negatives are the other images of this (local) batch. Returns, for "1t5" and
        "1t7", a dict of "log_probs" [b, L, k], "q" [b, L, k] and "score" [b, L],
        float32, with k = max(n_mix, 1): without mixture q is all ones and the score
        the log-probability of the positive, with it the mixture objective per location.
        """
        r1 = flat_global(feats1)  # [b, D]
        if self.n_mix:
            src = self.components(r1)  # [b, k, D]

            def combine(s):
                return mixture_nce(s, self.alpha)  # [b, L], [b, L, k]
        else:
            src = r1[:, None, :]  # [b, 1, D]

            def combine(s):
                return s[..., 0], tf.ones_like(s)  # [b, L], [b, L, 1]

        out = {}
        for name, key in (("1t5", R5), ("1t7", R7)):
            trg = infonce.flatten_locations(feats2[key])  # [b, L, D]
            log_probs, _ = infonce.infonce_component_log_probs(src, trg, self.tclip, 0.0)
            score, q = combine(log_probs)  # [b, L], [b, L, k]
            out[name] = {"log_probs": log_probs, "q": q, "score": score}
        return out

    def get_config(self) -> dict:
        return dict(
            super().get_config(),
            dim=self.dim,
            tclip=self.tclip,
            reg_coeff=self.reg_coeff,
            n_mix=self.n_mix,
            hidden=self.hidden,
            alpha=self.alpha,
        )


def _entropy(q):
    """[..., k] -> [...]: -sum q log q, with 0 log 0 = 0."""
    return -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(q), q), axis=-1)  # [...]


def _global_targets(feats1, feats2):
    """(trg1, trg2, offset): each view's r5 and r7 of the global batch, [B, L, D] per key.

    `offset` is this replica's first row in them."""
    trg1, trg2, offset = {}, {}, 0
    for k in (R5, R7):
        trg1[k], offset = distribute.gather_global(
            infonce.flatten_locations(feats1[k])
        )  # [B, L, D]
        trg2[k], _ = distribute.gather_global(infonce.flatten_locations(feats2[k]))  # [B, L, D]
    return trg1, trg2, offset


def _r5_sources(feats1, feats2, trg1, offset, seed_generator):
    """The 5->5 sources: one r5 location per image and view, ([b, D], [b, D])."""
    n = tf.shape(feats1[R1])[0]
    # One uniformly random r5 location per image and view, as the official
    # `_sample_src_ftr`; the seed generator's state is checkpointed with the model.
    # Every replica holds the same generator state, so each draws the locations of
    # the whole global batch and keeps its own rows: R replicas then sample exactly
    # what one device would (drawing [2, b] would repeat one replica's draws on all).
    global_n = tf.shape(trg1[R5])[0]
    loc = keras.random.randint((2, global_n), 0, N_R5_LOCATIONS, seed=seed_generator)  # [2, B]
    loc = loc[:, offset : offset + n]  # [2, b]
    r5_1 = infonce.sample_locations(feats1[R5], loc[0])  # [b, D]
    r5_2 = infonce.sample_locations(feats2[R5], loc[1])  # [b, D]
    return r5_1, r5_2
