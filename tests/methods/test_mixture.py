"""Mixture-based representations (AMDIM §3.7) against a NumPy transcription of the formula.

The objective: k components f1^j = f1 + MLP(f1)_j of each global feature; per
consequent location i, s_j(i) is the NCE log-softmax of the positive with f1^j as
the antecedent; the location's objective is max_q sum_j q_j s_j + alpha H(q) - alpha
log k = alpha logsumexp_j(s_j / alpha) - alpha log k.

The 1-vs-2-replica test runs a MirroredStrategy over the two logical CPU devices that
conftest.py makes before TensorFlow initialises.
"""

from unittest import mock

import numpy as np
import pytest
from conftest import two_replica_strategies

# -- NumPy reference ----------------------------------------------------------------


def np_log_probs(src, trg, tclip, pos_offset=0):
    """[b, D] x [B, L, D] -> ([b, L] log p(positive), raw scores [b, B, L]), by loops."""
    b, d = src.shape
    n_trg, n_loc, _ = trg.shape
    raw = np.einsum("bd,cld->bcl", src, trg) / np.sqrt(d)
    s = tclip * np.tanh(raw / tclip)
    out = np.zeros((b, n_loc))
    for i in range(b):
        p = i + pos_offset
        negs = np.concatenate([s[i, c] for c in range(n_trg) if c != p])
        for loc in range(n_loc):
            out[i, loc] = s[i, p, loc] - np.log(np.exp(s[i, p, loc]) + np.sum(np.exp(negs)))
    return out, raw


def np_mixture(s, alpha):
    """s [..., k] -> (alpha * logsumexp(s / alpha) - alpha log k, softmax(s / alpha))."""
    k = s.shape[-1]
    m = np.max(s / alpha, axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.sum(np.exp(s / alpha - m), axis=-1))
    q = np.exp(s / alpha - m)
    return alpha * (lse - np.log(k)), q / q.sum(-1, keepdims=True)


def np_components(r1, w):
    hidden = np.maximum(r1 @ w[0] + w[1], 0.0)
    delta = hidden @ w[2] + w[3]
    return r1[:, None, :] + delta.reshape(r1.shape[0], -1, r1.shape[1])  # [b, k, D]


def np_mixture_amdim(f1, f2, w, loc1, loc2, alpha, tclip, reg_coeff):
    flat = lambda x: x.reshape(x.shape[0], -1, x.shape[-1])
    b = len(loc1)
    m1 = np_components(f1["r1"].reshape(b, -1), w)
    m2 = np_components(f2["r1"].reshape(b, -1), w)
    k = m1.shape[1]

    def mixture(mix, trg):
        per = [np_log_probs(mix[:, j], trg, tclip) for j in range(k)]
        s = np.stack([p[0] for p in per], axis=-1)  # [b, L, k]
        raw = np.stack([p[1] for p in per])
        return -np.mean(np_mixture(s, alpha)[0]), reg_coeff * np.mean(raw**2)

    def nce(src, trg):
        lp, raw = np_log_probs(src, trg, tclip)
        return -np.mean(lp), reg_coeff * np.mean(raw**2)

    r5_1 = flat(f1["r5"])[np.arange(b), loc1]
    r5_2 = flat(f2["r5"])[np.arange(b), loc2]
    pairs = {
        "nce/1t5": (mixture(m1, flat(f2["r5"])), mixture(m2, flat(f1["r5"]))),
        "nce/1t7": (mixture(m1, flat(f2["r7"])), mixture(m2, flat(f1["r7"]))),
        "nce/5t5": (nce(r5_1, flat(f2["r5"])), nce(r5_2, flat(f1["r5"]))),
    }
    out = {n: 0.5 * (a[0] + c[0]) for n, (a, c) in pairs.items()}
    out["loss/reg"] = 0.5 * sum(a[1] + c[1] for a, c in pairs.values())
    out["total"] = out["nce/1t5"] + out["nce/1t7"] + out["nce/5t5"] + out["loss/reg"]
    return out


def random_feats(rng, b=4, d=12):
    return {
        "r1": rng.randn(b, 1, 1, d),
        "r5": rng.randn(b, 5, 5, d),
        "r7": rng.randn(b, 7, 7, d),
    }


def as_tf(f):
    import tensorflow as tf

    return {k: tf.constant(v, tf.float32) for k, v in f.items()}


def locations(loc1, loc2):
    """Stands in for keras.random.randint: the given 5->5 source locations."""
    import tensorflow as tf

    return lambda *a, **k: tf.constant(np.stack([loc1, loc2]), tf.int32)


# -- the maths (methods/infonce.py, amdim's mixture_nce) --------------------------


@pytest.mark.parametrize("k,pos_offset", [(1, 0), (3, 0), (2, 3)])
def test_component_log_probs_match_numpy(k, pos_offset):
    import tensorflow as tf

    from amdim_tf.methods import infonce

    rng = np.random.RandomState(0)
    b, n_trg = 3, 3 + pos_offset
    src = rng.randn(b, k, 8) * 4
    trg = rng.randn(n_trg, 5, 8) * 4
    got, reg = infonce.infonce_component_log_probs(
        tf.constant(src, tf.float32), tf.constant(trg, tf.float32), 5.0, 0.05, pos_offset
    )
    assert got.shape == (b, 5, k) and got.dtype == tf.float32
    per = [np_log_probs(src[:, j], trg, 5.0, pos_offset) for j in range(k)]
    np.testing.assert_allclose(got.numpy(), np.stack([p[0] for p in per], -1), rtol=1e-5, atol=1e-5)
    raw = np.stack([p[1] for p in per])
    np.testing.assert_allclose(reg.numpy(), 0.05 * np.mean(raw**2), rtol=1e-5)
    # Its mean is infonce's loss, component by component.
    for j in range(k):
        loss, _ = infonce.infonce(
            src[:, j].astype("float32"), trg.astype("float32"), 5.0, 0.05, pos_offset
        )
        np.testing.assert_allclose(-got.numpy()[..., j].mean(), loss.numpy(), rtol=1e-5)


def test_masked_infonce_is_minus_the_mean_of_its_log_probs():
    import tensorflow as tf

    from amdim_tf.methods import infonce

    scores = tf.constant(np.random.RandomState(1).randn(3, 5, 4) * 3, tf.float32)
    lp = infonce.masked_infonce_log_probs(scores, pos_offset=2)
    assert lp.shape == (3, 4)
    assert float(infonce.masked_infonce(scores, pos_offset=2)) == float(-tf.reduce_mean(lp))
    assert np.all(lp.numpy() < 0)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_mixture_nce_matches_numpy_and_is_the_entropy_regularised_optimum(alpha):
    import tensorflow as tf

    from amdim_tf.methods.amdim.objective import mixture_nce

    rng = np.random.RandomState(2)
    s = -np.abs(rng.randn(6, 5, 4) * 3)  # log-probabilities: <= 0
    obj, q = mixture_nce(tf.constant(s, tf.float32), alpha)
    ref_obj, ref_q = np_mixture(s, alpha)
    np.testing.assert_allclose(obj.numpy(), ref_obj, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q.numpy(), ref_q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q.numpy().sum(-1), 1.0, rtol=1e-6)

    # The variational form the paper maximises: sum_j q_j s_j + alpha H(q) - alpha log k.
    def value(qq):
        h = -np.sum(qq * np.log(np.maximum(qq, 1e-30)), -1)
        return np.sum(qq * s, -1) + alpha * h - alpha * np.log(s.shape[-1])

    np.testing.assert_allclose(value(q.numpy().astype(np.float64)), ref_obj, rtol=1e-4, atol=1e-4)
    for _ in range(20):  # no other assignment does better
        other = rng.dirichlet(np.ones(4), size=(6, 5))
        assert np.all(value(other) <= ref_obj + 1e-6)
    # Between the mean and the max over components.
    assert np.all(obj.numpy() >= s.mean(-1) - 1e-5) and np.all(obj.numpy() <= s.max(-1) + 1e-5)


def test_mixture_nce_limits():
    import tensorflow as tf

    from amdim_tf.methods.amdim.objective import mixture_nce

    s = -np.abs(np.random.RandomState(3).randn(5, 7, 3) * 4)
    # alpha -> 0: the best component per location, q one-hot on it.
    obj, q = mixture_nce(tf.constant(s, tf.float32), 1e-3)
    np.testing.assert_allclose(obj.numpy(), s.max(-1), atol=2e-3)
    np.testing.assert_array_equal(np.argmax(q.numpy(), -1), np.argmax(s, -1))
    # Components that agree score as the base NCE, whatever alpha.
    same = np.repeat(s[..., :1], 3, axis=-1)
    for alpha in (0.01, 1.0, 10.0):
        obj, q = mixture_nce(tf.constant(same, tf.float32), alpha)
        np.testing.assert_allclose(obj.numpy(), s[..., 0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(q.numpy(), 1.0 / 3, rtol=1e-5)
    # Half-precision in, float32 out.
    obj, q = mixture_nce(tf.constant(s, tf.bfloat16), 1.0)
    assert obj.dtype == tf.float32 and q.dtype == tf.float32


# -- the objective ------------------------------------------------------------------


def _weights(obj):
    return [v.numpy().astype(np.float64) for v in obj.weights]


def test_mixture_objective_matches_numpy_per_term():
    from amdim_tf.methods import AMDIMObjective

    rng = np.random.RandomState(4)
    f1, f2 = random_feats(rng), random_feats(rng)
    loc1, loc2 = rng.randint(0, 25, 4), rng.randint(0, 25, 4)
    obj = AMDIMObjective(12, 20.0, 0.05, n_mix=3, hidden=7, alpha=0.5)
    assert [tuple(v.shape) for v in obj.weights] == [(12, 7), (7,), (7, 36), (36,)]
    with mock.patch("keras.random.randint", locations(loc1, loc2)):
        out = obj(as_tf(f1), as_tf(f2))
    ref = np_mixture_amdim(f1, f2, _weights(obj), loc1, loc2, 0.5, 20.0, 0.05)
    for key, want in ref.items():
        np.testing.assert_allclose(out[key].numpy(), want, rtol=1e-5, atol=1e-5, err_msg=key)
    assert 0.0 < float(out["mix/entropy"]) <= 1.0
    assert all(v.dtype == "float32" for v in out.values())


def test_one_component_with_a_zero_last_layer_is_the_base_objective():
    """n_mix = 1: the mixture is its one component (logsumexp of one term, minus
    log 1), and with MLP(f1) = 0 the component is f1: every term equals AMDIM's."""
    from amdim_tf.methods import AMDIMObjective

    rng = np.random.RandomState(5)
    f1, f2 = as_tf(random_feats(rng)), as_tf(random_feats(rng))
    loc1, loc2 = rng.randint(0, 25, 4), rng.randint(0, 25, 4)
    mix = AMDIMObjective(12, 20.0, 0.05, n_mix=1, alpha=0.7)
    for v in mix.mix_out.weights:
        v.assign(np.zeros(v.shape, "float32"))
    with mock.patch("keras.random.randint", locations(loc1, loc2)):
        got = mix(f1, f2)
        want = AMDIMObjective(12, 20.0, 0.05)(f1, f2)
    for key in want:
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-6, err_msg=key)
    assert float(got["mix/entropy"]) == 0.0 and "mix/entropy" not in want


def test_one_component_is_amdim_with_the_component_as_antecedent():
    import tensorflow as tf

    from amdim_tf.methods import AMDIMObjective, infonce

    rng = np.random.RandomState(6)
    f1, f2 = as_tf(random_feats(rng)), as_tf(random_feats(rng))
    mix = AMDIMObjective(12, 20.0, 0.05, n_mix=1, alpha=2.0)
    with mock.patch("keras.random.randint", locations(np.zeros(4, int), np.zeros(4, int))):
        got = mix(f1, f2)
    c1 = mix.components(tf.reshape(f1["r1"], [4, -1]))[:, 0]
    c2 = mix.components(tf.reshape(f2["r1"], [4, -1]))[:, 0]
    flat = infonce.flatten_locations

    def nce(src, trg):
        return infonce.infonce(src, flat(trg), 20.0, 0.05)[0]

    want = 0.5 * (nce(c1, f2["r7"]) + nce(c2, f1["r7"]))
    np.testing.assert_allclose(got["nce/1t7"].numpy(), want.numpy(), rtol=1e-6)
    assert float(tf.reduce_max(tf.abs(c1 - tf.reshape(f1["r1"], [4, -1])))) > 1e-3


@pytest.mark.parametrize("n_mix", [0, 3])
def test_config_round_trip(n_mix):
    import keras

    from amdim_tf.methods import AMDIMObjective

    obj = AMDIMObjective(8, 10.0, 0.1, n_mix=n_mix, hidden=5, alpha=0.25)
    assert keras.saving.get_registered_name(AMDIMObjective) == "amdim_tf>AMDIMObjective"
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(again) is AMDIMObjective and again.get_config() == obj.get_config()
    assert [tuple(v.shape) for v in again.weights] == [tuple(v.shape) for v in obj.weights]
    assert len(obj.weights) == (4 if n_mix else 0)


def test_configs_of_the_former_mixture_layer_still_load():
    """Before the plain and mixture objectives became one layer, the mixture was
    registered as "amdim_tf>MixtureAMDIMObjective"; its serialised form loads as
    the mixture path of AMDIMObjective."""
    import keras

    from amdim_tf.methods import AMDIMObjective

    config = dict(name="objective", trainable=True, dtype="float32")
    config.update(dim=8, n_mix=3, hidden=5, alpha=0.25, tclip=10.0, reg_coeff=0.1)
    old = {"module": None, "class_name": "MixtureAMDIMObjective", "config": config,
           "registered_name": "amdim_tf>MixtureAMDIMObjective"}  # fmt: skip
    obj = keras.saving.deserialize_keras_object(old)
    assert type(obj) is AMDIMObjective and (obj.n_mix, obj.hidden, obj.alpha) == (3, 5, 0.25)
    assert "mix/entropy" in obj.metric_names


def test_bad_arguments_quote_the_value():
    from amdim_tf.methods import AMDIMObjective

    with pytest.raises(ValueError, match="-2"):
        AMDIMObjective(8, 20.0, 0.05, n_mix=-2)
    with pytest.raises(ValueError, match="mix_alpha.*0.0"):
        AMDIMObjective(8, 20.0, 0.05, n_mix=2, alpha=0.0)
    with pytest.raises(ValueError, match="mix_alpha.*None"):
        AMDIMObjective(8, 20.0, 0.05, n_mix=2)


# -- in the model -------------------------------------------------------------------


def test_build_objective_follows_n_mix(tiny_config):
    from amdim_tf.methods import (
        AMDIMObjective,
        build_encoder,
        build_objective,
    )

    encoder = build_encoder(tiny_config)
    plain = build_objective(tiny_config, encoder)
    assert type(plain) is AMDIMObjective and plain.n_mix == 0 and not plain.weights
    assert "mix/entropy" not in plain.metric_names
    tiny_config.model.n_mix, tiny_config.model.mix_hidden, tiny_config.loss.mix_alpha = 3, 5, 0.2
    obj = build_objective(tiny_config, encoder)
    assert isinstance(obj, AMDIMObjective) and len(obj.weights) == 4
    assert (obj.dim, obj.n_mix, obj.hidden, obj.alpha) == (32, 3, 5, 0.2)
    tiny_config.model.n_mix = -1
    with pytest.raises(ValueError, match="-1"):
        build_objective(tiny_config, encoder)


def test_gradients_reach_the_mixture_mlp_and_the_encoder(tiny_config):
    import tensorflow as tf

    from amdim_tf.run.build import build_model

    tiny_config.model.n_mix = 3
    model = build_model(tiny_config, steps_per_epoch=3, num_classes=10)
    mlp = model.objective.trainable_variables
    assert len(mlp) == 4 and all(any(v is w for w in model.trainable_variables) for v in mlp)
    rng = np.random.RandomState(7)
    v1, v2 = rng.rand(2, 4, 32, 32, 3).astype("float32")
    with tf.GradientTape() as tape:
        out = model.compute_losses((v1, v2), tf.constant([0, 1, 2, 3]), training=True)
        loss = out["logged"]["loss/total"]
    grads = tape.gradient(loss, mlp + model.encoder.trainable_variables)
    norms = [0.0 if g is None else float(tf.norm(g)) for g in grads]
    assert all(n > 0 for n in norms[:4]), norms[:4]
    assert sum(n > 0 for n in norms[4:]) > len(norms[4:]) // 2
    assert "mix/entropy" in out["logged"]


def test_mixed_bfloat16_keeps_the_mixture_in_float32(tiny_config):
    import tensorflow as tf

    from amdim_tf.run.build import build_model

    tiny_config.model.n_mix = 2
    tiny_config.precision = "mixed_bfloat16"
    model = build_model(tiny_config, steps_per_epoch=3, num_classes=10)
    assert all(v.dtype == "float32" for v in model.objective.weights)
    rng = np.random.RandomState(8)
    v1, v2 = rng.rand(2, 4, 32, 32, 3).astype("float32")
    feats = model.encoder(v1)
    assert feats["r1"].dtype == tf.bfloat16
    assert model.objective.components(tf.reshape(feats["r1"], [4, -1])).dtype == tf.float32
    logs = model.train_step(((v1, v2), tf.constant([0, 1, 2, 3])))
    assert all(np.isfinite(float(v)) for v in logs.values()), logs


def test_objective_weights_are_checkpointed_with_the_model(tiny_config, tmp_path):
    import tensorflow as tf

    from amdim_tf.run.build import build_model

    tiny_config.model.n_mix = 2
    model = build_model(tiny_config, steps_per_epoch=3, num_classes=10)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    saved = [v.numpy() for v in model.objective.weights]
    other = build_model(tiny_config, steps_per_epoch=3, num_classes=10)
    for v in other.objective.weights:
        v.assign(tf.zeros_like(v))
    tf.train.Checkpoint(model=other).read(path).assert_existing_objects_matched()
    for a, b in zip(saved, other.objective.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


# -- 1 vs 2 replicas ---------------------------------------------------------------


def test_one_and_two_replicas_give_the_same_mixture_loss_and_gradients():
    out = _replicas()
    # Measured: agreement to float32 round-off (~1e-7 relative); a replica that ranked
    # only its own half of the batch would differ by ~1 nat per term.
    assert abs(out["loss_1"] - out["loss_2"]) < 1e-5 * abs(out["loss_1"]), out
    assert out["grad_rel_err"] < 1e-4, out
    assert out["local_loss_gap"] > 0.5, out


def _replicas():
    import keras
    import tensorflow as tf

    from amdim_tf import distribute
    from amdim_tf.methods import AMDIMObjective

    keras.utils.set_random_seed(0)
    n, d = 8, 16
    rng = np.random.RandomState(9)
    f1, f2 = random_feats(rng, n, d), random_feats(rng, n, d)
    one, two = two_replica_strategies()
    ref = AMDIMObjective(d, 20.0, 0.05, n_mix=3, alpha=0.5)
    with two.scope():
        obj2 = AMDIMObjective(d, 20.0, 0.05, n_mix=3, alpha=0.5)
    obj2.set_weights(ref.get_weights())

    def loss_and_grads(strategy, obj):
        b = n // strategy.num_replicas_in_sync

        def shard(f):
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: {
                    k: tf.constant(
                        v[
                            ctx.replica_id_in_sync_group * b : (ctx.replica_id_in_sync_group + 1)
                            * b
                        ],
                        tf.float32,
                    )
                    for k, v in f.items()
                }
            )

        def step(a, c):
            with tf.GradientTape() as tape:
                loss = obj(a, c)["total"]
                scaled = loss / distribute.num_replicas()
            return loss, tape.gradient(scaled, obj.trainable_variables)

        loc = np.arange(n) % 25
        with mock.patch("keras.random.randint", locations(loc, loc[::-1] % 25)):
            loss, grads = tf.function(lambda a, c: strategy.run(step, args=(a, c)))(
                shard(f1), shard(f2)
            )
        loss = strategy.reduce("MEAN", loss, axis=None)
        grads = [strategy.reduce("SUM", g, axis=None).numpy() for g in grads]
        return float(loss), np.concatenate([g.ravel() for g in grads])

    loss1, g1 = loss_and_grads(one, ref)
    loss2, g2 = loss_and_grads(two, obj2)
    with mock.patch.object(distribute, "gather_global", lambda x: (x, 0)):
        local, _ = loss_and_grads(two, obj2)
    err = float(np.max(np.abs(g2 - g1)) / np.max(np.abs(g1)))
    return dict(loss_1=loss1, loss_2=loss2, grad_rel_err=err, local_loss_gap=loss1 - local)
