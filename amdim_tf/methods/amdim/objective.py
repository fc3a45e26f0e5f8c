"""AMDIM's objective: multiscale InfoNCE across two augmented views (§3.2-3.3).

Bachman, Hjelm & Buchwalter (2019) and the official code's `costs.py`
(`NCE_MI_MULTI`). Three pairs of scales, each in both directions x1 -> x2 and
x2 -> x1:

    1 -> 5   the global feature r1 of one view predicts every r5 location of the other;
    1 -> 7   r1 predicts every r7 location of the other view;
    5 -> 5   one random r5 location of one view predicts every r5 location of the other.

Negatives are every location of every *other* image of the global batch: the
targets are gathered over replicas, so adding replicas never weakens the
objective. The tensor maths (scaled, clipped scores, the penalty, the masked
softmax) is `losses.infonce`.

Mixture-based representations (§3.7) are `MixtureAMDIMObjective`, used when
config.model.n_mix > 0; with n_mix = 0 the plain `AMDIMObjective` runs, exactly
as before.
"""

import keras
import tensorflow as tf

from amdim_tf import distribute
from amdim_tf.methods import losses
from amdim_tf.methods.nn import TORCH_DEFAULT_KERNEL_INIT, torch_default_bias_init

N_R5_LOCATIONS = 25  # the 5x5 map


class AMDIMObjective:
    """nce/1t5 + nce/1t7 + nce/5t5 + loss/reg, each NCE averaged over both directions.

    Args:
        tclip: soft clip of the NCE scores (20 in the paper).
        reg_coeff: weight of the mean squared raw score (the logit penalty).

    Call: (feats1, feats2, seed_generator=...) with the encoder outputs of each
    view ("r1" [b,1,1,D], "r5" [b,5,5,D], "r7" [b,7,7,D]) -> dict of float32
    scalars "total" and one per `metric_names`. "loss/reg" is half the sum of the
    six per-direction penalties, as the official code.
    """

    metric_names = ("nce/1t5", "nce/1t7", "nce/5t5", "loss/reg")
    n_mix = 0  # no mixture components: r1 itself is the antecedent

    def __init__(self, tclip: float = 20.0, reg_coeff: float = 0.05):
        self.tclip = tclip
        self.reg_coeff = reg_coeff

    def __call__(self, feats1: dict, feats2: dict, seed_generator=None) -> dict:
        n = tf.shape(feats1["r1"])[0]
        trg1, trg2, offset = _global_targets(feats1, feats2)
        r5_1, r5_2 = _r5_sources(feats1, feats2, trg1, offset, seed_generator)
        r1_1 = tf.reshape(feats1["r1"], [n, -1])  # [b, D]
        r1_2 = tf.reshape(feats2["r1"], [n, -1])  # [b, D]

        def nce(src, trg):  # (loss, reg) of one direction
            return losses.infonce(src, trg, self.tclip, self.reg_coeff, offset)

        pairs = {  # name: (x1 -> x2, x2 -> x1)
            "nce/1t5": (nce(r1_1, trg2["r5"]), nce(r1_2, trg1["r5"])),
            "nce/1t7": (nce(r1_1, trg2["r7"]), nce(r1_2, trg1["r7"])),
            "nce/5t5": (nce(r5_1, trg2["r5"]), nce(r5_2, trg1["r5"])),
        }
        out = {name: 0.5 * (a[0] + b[0]) for name, (a, b) in pairs.items()}
        out["loss/reg"] = 0.5 * tf.add_n([a[1] + b[1] for a, b in pairs.values()])
        out["total"] = out["nce/1t5"] + out["nce/1t7"] + out["nce/5t5"] + out["loss/reg"]
        return out

    def location_scores(self, feats1: dict, feats2: dict) -> dict:
        """Per-location NCE scores of view 1's r1 against view 2's r5 and r7 (for plots).

        Negatives are the other images of this (local) batch. Returns, for "1t5" and
        "1t7", a dict of "log_probs" [b, L, 1], "q" [b, L, 1] (all ones) and
        "score" [b, L], float32.
        """
        return _location_scores(
            _flat_r1(feats1)[:, None, :], feats2, self.tclip, lambda s: (s[..., 0], tf.ones_like(s))
        )


@keras.saving.register_keras_serializable(package="amdim_tf")
class MixtureAMDIMObjective(keras.layers.Layer):
    """AMDIM with mixture-based antecedents (§3.7): k components of r1 share out the locations.

    From each antecedent r1 (f1) of a view, a one-hidden-layer ReLU MLP with a
    residual connection makes k mixture features f1^j = f1 + MLP(f1)_j (the MLP
    is shared by both views and its output holds the k components side by side).
    For each consequent location i of the other view (its r5 and r7 targets),
    s_j(i) is the NCE log-softmax score of the positive when f1^j is the
    antecedent, against the same negatives as `AMDIMObjective` (every location of
    every other image of the global batch, scored by f1^j). Per location we
    maximise sum_j q_j(i) s_j(i) + alpha * H(q(i)), whose optimum
    q(i) = softmax_j(s_j(i) / alpha) makes it alpha * logsumexp_j(s_j(i) / alpha);
    minus alpha * log k, so it equals the base NCE when all components agree
    (`losses.mixture_nce`). The q are the optimum, not a network: the envelope
    theorem makes the gradient through them zero, so no stop_gradient is needed.
    nce/1t5 and nce/1t7 are the negated mean of that objective over locations,
    images and both view directions; nce/5t5 and the score penalty (now over every
    component's raw scores) are as in `AMDIMObjective`.

    The MLP's last layer has PyTorch's default random init, not zeros: with equal
    components every component receives the same gradient, so zero-initialised
    components would stay identical for ever. With k = 1 and that layer zeroed,
    the objective is `AMDIMObjective` exactly (tested); with k = 1 in general it
    is AMDIM with the antecedent f1 + MLP(f1).

    Args:
        dim: width of r1, r5 and r7 (the encoder's n_rkhs).
        n_mix: k, the number of mixture components (>= 1).
        hidden: width of the MLP's hidden layer (0 = dim).
        alpha: entropy weight of q (> 0); alpha -> 0 takes the best component per
            location, large alpha the mean over components. 1 makes the objective
            log(mean_j p_j), the log-likelihood of a uniform mixture.
        tclip, reg_coeff: as `AMDIMObjective`.

    Call: as `AMDIMObjective`, plus "mix/entropy": the mean entropy of q over the
    1->5 and 1->7 locations of both directions, in units of log k (1 = every
    location split evenly, 0 = each taken by one component; 0 when k = 1).
    Scores, q and the MLP are float32 under every precision policy.
    """

    metric_names = ("nce/1t5", "nce/1t7", "nce/5t5", "loss/reg", "mix/entropy")

    def __init__(self, dim, n_mix, hidden=0, alpha=1.0, tclip=20.0, reg_coeff=0.05, **kwargs):
        super().__init__(**kwargs)
        if int(n_mix) < 1:
            raise ValueError(
                f"MixtureAMDIMObjective needs n_mix >= 1 components, received n_mix={n_mix!r}; "
                "config.model.n_mix=0 selects the plain AMDIMObjective."
            )
        if not float(alpha) > 0:
            raise ValueError(
                f"config.loss.mix_alpha must be > 0 (the entropy weight), received {alpha!r}; "
                "a small value such as 0.01 approximates the hard max over components."
            )
        self.dim, self.n_mix = int(dim), int(n_mix)
        self.hidden, self.alpha = int(hidden), float(alpha)
        self.tclip, self.reg_coeff = tclip, reg_coeff
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
        self.built = True

    def components(self, r1):
        """r1 [b, D] (any float dtype) -> the k mixture features [b, k, D], float32."""
        f1 = tf.cast(r1, tf.float32)  # [b, D]
        delta = self.mix_out(self.mix_hidden(f1))  # [b, k*D]
        delta = tf.reshape(delta, [-1, self.n_mix, self.dim])  # [b, k, D]
        return f1[:, None, :] + delta  # [b, k, D]

    def call(self, feats1, feats2, seed_generator=None):
        trg1, trg2, offset = _global_targets(feats1, feats2)
        r5_1, r5_2 = _r5_sources(feats1, feats2, trg1, offset, seed_generator)
        mix_1 = self.components(_flat_r1(feats1))  # [b, k, D]
        mix_2 = self.components(_flat_r1(feats2))  # [b, k, D]

        def mixture(src, trg):  # (loss, reg, mean entropy of q) of one direction
            log_probs, reg = losses.infonce_component_log_probs(
                src, trg, self.tclip, self.reg_coeff, offset
            )  # [b, L, k], []
            objective, q = losses.mixture_nce(log_probs, self.alpha)  # [b, L], [b, L, k]
            return -tf.reduce_mean(objective), reg, tf.reduce_mean(_entropy(q))

        def nce(src, trg):
            return losses.infonce(src, trg, self.tclip, self.reg_coeff, offset)

        pairs = {  # name: (x1 -> x2, x2 -> x1)
            "nce/1t5": (mixture(mix_1, trg2["r5"]), mixture(mix_2, trg1["r5"])),
            "nce/1t7": (mixture(mix_1, trg2["r7"]), mixture(mix_2, trg1["r7"])),
            "nce/5t5": (nce(r5_1, trg2["r5"]), nce(r5_2, trg1["r5"])),
        }
        out = {name: 0.5 * (a[0] + b[0]) for name, (a, b) in pairs.items()}
        out["loss/reg"] = 0.5 * tf.add_n([a[1] + b[1] for a, b in pairs.values()])
        out["total"] = out["nce/1t5"] + out["nce/1t7"] + out["nce/5t5"] + out["loss/reg"]
        entropies = [d[2] for name in ("nce/1t5", "nce/1t7") for d in pairs[name]]
        log_k = tf.math.log(tf.cast(self.n_mix, tf.float32))
        out["mix/entropy"] = tf.math.divide_no_nan(tf.add_n(entropies) / 4.0, log_k)
        return out

    def location_scores(self, feats1, feats2):
        """As `AMDIMObjective.location_scores`, with the k components: "log_probs" and
        "q" are [b, L, k], "score" [b, L] is the mixture objective per location."""
        return _location_scores(
            self.components(_flat_r1(feats1)),
            feats2,
            self.tclip,
            lambda s: losses.mixture_nce(s, self.alpha),
        )

    def get_config(self):
        return dict(
            super().get_config(),
            dim=self.dim,
            n_mix=self.n_mix,
            hidden=self.hidden,
            alpha=self.alpha,
            tclip=self.tclip,
            reg_coeff=self.reg_coeff,
        )


def _flat_r1(feats):
    r1 = feats["r1"]
    return tf.reshape(r1, [tf.shape(r1)[0], -1])  # [b, D]


def _entropy(q):
    """[..., k] -> [...]: -sum q log q, with 0 log 0 = 0."""
    return -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(q), q), axis=-1)


def _global_targets(feats1, feats2):
    """(trg1, trg2, offset): each view's r5 and r7 of the global batch, [B, L, D] per key.

    `offset` is this replica's first row in them."""
    trg1, trg2, offset = {}, {}, 0
    for k in ("r5", "r7"):
        trg1[k], offset = distribute.gather_global(losses.flatten_locations(feats1[k]))  # [B, L, D]
        trg2[k], _ = distribute.gather_global(losses.flatten_locations(feats2[k]))  # [B, L, D]
    return trg1, trg2, offset


def _r5_sources(feats1, feats2, trg1, offset, seed_generator):
    """The 5->5 sources: one r5 location per image and view, ([b, D], [b, D])."""
    n = tf.shape(feats1["r1"])[0]
    # One uniformly random r5 location per image and view, as the official
    # `_sample_src_ftr`; the seed generator's state is checkpointed with the model.
    # Every replica holds the same generator state, so each draws the locations of
    # the whole global batch and keeps its own rows: R replicas then sample exactly
    # what one device would (drawing [2, b] would repeat one replica's draws on all).
    global_n = tf.shape(trg1["r5"])[0]
    loc = keras.random.randint((2, global_n), 0, N_R5_LOCATIONS, seed=seed_generator)  # [2, B]
    loc = loc[:, offset : offset + n]  # [2, b]
    r5_1 = losses.sample_locations(feats1["r5"], loc[0])  # [b, D]
    r5_2 = losses.sample_locations(feats2["r5"], loc[1])  # [b, D]
    return r5_1, r5_2


def _location_scores(src, feats2, tclip, combine):
    """src [b, k, D] against feats2's r5 and r7 of this batch; `combine` maps
    log_probs [b, L, k] to (score [b, L], q [b, L, k])."""
    out = {}
    for name, key in (("1t5", "r5"), ("1t7", "r7")):
        trg = losses.flatten_locations(feats2[key])  # [b, L, D]
        log_probs, _ = losses.infonce_component_log_probs(src, trg, tclip, 0.0)  # [b, L, k]
        score, q = combine(log_probs)  # [b, L], [b, L, k]
        out[name] = {"log_probs": log_probs, "q": q, "score": score}
    return out
