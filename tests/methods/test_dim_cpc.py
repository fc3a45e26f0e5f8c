"""DIM and CPC beside AMDIM: estimators against NumPy, encoders' shapes and causality,
the prior discriminator's isolation from the encoder, and a few training steps of each."""

import importlib.util
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT

from amdim_tf.methods import AMDIMEncoder, CPCEncoder
from amdim_tf.methods.cpc.objective import cpc_infonce
from amdim_tf.methods.dim import objective as dim_objective
from amdim_tf.methods.dim.encoder import DIMEncoder, dim_local_shape
from amdim_tf.run.build import build_model


def load_config(name, arg):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.data.source = "digits"
    return config


# --------------------------------------------------------------------------- NumPy references


def softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def np_dim_terms(scores, pos_offset):
    """Loop-level split of DIM's scores [b, B, L] into positive and negative scores."""
    b, n_trg, n_loc = scores.shape
    pos, neg = [], []
    for i in range(b):
        for c in range(n_trg):
            for loc in range(n_loc):
                (pos if c == i + pos_offset else neg).append(scores[i, c, loc])
    return np.array(pos), np.array(neg)


def np_jsd(scores, pos_offset):
    pos, neg = np_dim_terms(scores, pos_offset)
    return np.mean(softplus(neg) - np.log(2)) - np.mean(np.log(2) - softplus(-pos))


def np_dv(scores, pos_offset):
    pos, neg = np_dim_terms(scores, pos_offset)
    return np.log(np.mean(np.exp(neg))) - np.mean(pos)


def np_nce(scores, pos_offset):
    b, n_trg, n_loc = scores.shape
    terms = []
    for i in range(b):
        p = i + pos_offset
        negs = np.concatenate([scores[i, c] for c in range(n_trg) if c != p])
        for loc in range(n_loc):
            pos = scores[i, p, loc]
            terms.append(pos - np.log(np.exp(pos) + np.sum(np.exp(negs))))
    return -np.mean(terms)


def np_cpc(preds, targets, k, pos_offset):
    b, rows, width, _ = preds.shape
    n_trg, height, _, _ = targets.shape
    flat_t = targets.reshape(-1, targets.shape[-1])
    terms = []
    for n in range(b):
        for i in range(rows):
            for j in range(width):
                logits = flat_t @ preds[n, i, j]
                pos = np.dot(preds[n, i, j], targets[n + pos_offset, i + k, j])
                terms.append(pos - np.log(np.sum(np.exp(logits))))
    return -np.mean(terms)


@pytest.mark.parametrize(
    "name,fn,ref",
    [
        ("jsd", dim_objective.dim_jsd_loss, np_jsd),
        ("nce", dim_objective.dim_nce_loss, np_nce),
        ("dv", dim_objective.dim_dv_loss, np_dv),
    ],
)
@pytest.mark.parametrize("pos_offset", [0, 2])
def test_dim_estimators_match_numpy(name, fn, ref, pos_offset):
    rng = np.random.RandomState(1)
    scores = rng.randn(3, 6, 4) * 2.0
    # Make the true pairs stand out, so a wrong positive index changes the value a lot.
    for i in range(3):
        scores[i, i + pos_offset] += 3.0
    got = fn(tf.constant(scores, tf.float32), pos_offset).numpy()
    np.testing.assert_allclose(got, ref(scores, pos_offset), rtol=1e-5, atol=1e-5)
    assert abs(got - ref(scores, (pos_offset + 1) % 4)) > 0.1


def test_dim_dv_is_stable_for_large_scores():
    scores = np.full((2, 4, 3), 200.0, np.float32)
    assert np.isfinite(dim_objective.dim_dv_loss(tf.constant(scores)).numpy())
    assert np.isfinite(dim_objective.dim_nce_loss(tf.constant(scores)).numpy())
    assert np.isfinite(dim_objective.dim_jsd_loss(tf.constant(-scores)).numpy())


def test_prior_gan_losses_match_numpy():
    rng = np.random.RandomState(2)
    d_p, d_q = rng.randn(5, 1) * 3, rng.randn(5, 1) * 3
    want = np.mean(-np.log(1 / (1 + np.exp(-d_p)))) + np.mean(-np.log(1 - 1 / (1 + np.exp(-d_q))))
    np.testing.assert_allclose(
        dim_objective.prior_discriminator_loss(d_p, d_q).numpy(), want, rtol=1e-5
    )
    np.testing.assert_allclose(
        dim_objective.nonsaturating_generator_loss(d_q).numpy(),
        np.mean(-np.log(1 / (1 + np.exp(-d_q)))),
        rtol=1e-5,
    )


@pytest.mark.parametrize("k,pos_offset", [(2, 0), (2, 1), (3, 1)])
def test_cpc_infonce_matches_numpy(k, pos_offset):
    rng = np.random.RandomState(3)
    targets = rng.randn(3, 5, 4, 6)  # [B, H, W, D]
    preds = rng.randn(2, 5 - k, 4, 6)  # [b, H-k, W, D]
    got = cpc_infonce(
        tf.constant(preds, tf.float32), tf.constant(targets, tf.float32), k, pos_offset
    ).numpy()
    np.testing.assert_allclose(got, np_cpc(preds, targets, k, pos_offset), rtol=1e-5, atol=1e-5)


def test_cpc_infonce_positive_is_k_rows_below_same_column_same_image():
    """Orthogonal patch embeddings and exact predictions: ~0 loss only with the right index."""
    n, height, width, k = 2, 5, 3, 2
    targets = np.eye(n * height * width).reshape(n, height, width, -1) * 20.0  # one-hot z
    right = targets[:, k:].copy()  # z_{i+k, j}
    wrong_row = targets[:, k - 1 : -1].copy()  # z_{i+k-1, j}
    wrong_col = np.roll(right, 1, axis=2)  # z_{i+k, j-1}
    wrong_img = right[::-1].copy()  # another image
    loss = lambda p: cpc_infonce(
        tf.constant(p, tf.float32), tf.constant(targets, tf.float32), k
    ).numpy()
    assert loss(right) < 1e-3
    for wrong in (wrong_row, wrong_col, wrong_img):
        assert loss(wrong) > 100.0


# --------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("size,local_side", [(32, 8), (64, 8)])
def test_dim_encoder_shapes_follow_the_official_code(size, local_side):
    enc = DIMEncoder(size, ndf=4, n_rkhs=16, fc_units=8)
    out = enc(tf.zeros((2, size, size, 3)))
    n_stages = 3 if size == 32 else 4
    assert out["r1"].shape == (2, 1, 1, 16)
    # Official local_idx: the second-to-last k4 s2 stage, 8x8 at 32 and 64 px.
    assert out["local"].shape == (2, local_side, local_side, 4 * 2 ** (n_stages - 2))
    assert out["local"].shape[1:] == dim_local_shape(size, 4)
    assert out["conv"].shape == (2, 4, 4, 4 * 2 ** (n_stages - 1))
    assert out["fc"].shape == (2, 1, 1, 8)


def test_amdim_feature_shapes_for_dim_on_amdim_encoder(tiny_config):
    enc = AMDIMEncoder(32, tiny_config.model.ndf, tiny_config.model.n_rkhs, 1)
    out = enc(tf.zeros((2, 32, 32, 3)))
    for key in ("r7", "h7", "r5", "h5"):
        assert tuple(out[key].shape[1:]) == enc.feature_shapes[key]


def test_cpc_encoder_patches_and_causal_context():
    keras.utils.set_random_seed(0)
    enc = CPCEncoder(32, ndf=4, n_rkhs=8, context_blocks=2)
    enc.build((None, 32, 32, 3))
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype("float32")
    out = enc(x)
    assert enc.grid == 7 and out["z"].shape == (2, 7, 7, 8) and out["r1"].shape == (2, 1, 1, 8)
    np.testing.assert_allclose(
        out["r1"].numpy()[:, 0, 0], out["z"].numpy().mean(axis=(1, 2)), atol=1e-6
    )
    # Grid cell (i, j) is the 8x8 patch at pixel (4i, 4j).
    for i, j in ((0, 0), (2, 5), (6, 6)):
        patch = enc.patch_encoder(x[:, 4 * i : 4 * i + 8, 4 * j : 4 * j + 8])
        np.testing.assert_allclose(out["z"].numpy()[:, i, j], patch.numpy(), atol=1e-5)
    # Pixels from row 20 down only touch patch rows >= 4 (row 3 covers pixels 12..19):
    # the context of rows 0..3 must not see them, row 4 must.
    x2 = x.copy()
    x2[:, 20:] = np.random.RandomState(1).rand(2, 12, 32, 3)
    out2 = enc(x2)
    np.testing.assert_allclose(out2["c"].numpy()[:, :4], out["c"].numpy()[:, :4], atol=1e-6)
    assert np.abs(out2["c"].numpy()[:, 4:] - out["c"].numpy()[:, 4:]).max() > 1e-3


# --------------------------------------------------------------------------- prior discriminator


def _data(n=8, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.rand(n, 32, 32, 3).astype("float32")
    return (
        x,
        (x + 0.05 * rng.randn(*x.shape)).astype("float32"),
        (np.arange(n) % 10).astype("int32"),
    )


def test_discriminator_update_leaves_the_encoder_unchanged(monkeypatch):
    config = load_config("dim_local", "tiny")
    model = build_model(config, steps_per_epoch=10, num_classes=10)
    objective = model.objective
    adversary = model.auxiliary_variables
    assert adversary and {id(v) for v in adversary} <= {id(v) for v in model.trainable_variables}
    v1, v2, y = _data()

    # The adversary loss sends no gradient to the encoder or the critics.
    feats = model.encoder(v1, training=True)
    others = model.encoder.trainable_variables + objective.local_net.trainable_variables
    with tf.GradientTape() as tape:
        adv = objective.auxiliary_loss(feats, model.seed_generator)
    assert all(g is None for g in tape.gradient(adv, others))
    # While the generator term in "total" does reach the encoder.
    with tf.GradientTape() as tape:
        feats = model.encoder(v1, training=True)
        prior = objective(feats, None, seed_generator=model.seed_generator)["dim/prior"]
    enc_grads = tape.gradient(prior, model.encoder.trainable_variables)
    assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in enc_grads)

    # One train_step with the main update disabled: only the discriminator may move.
    main_update = {}
    monkeypatch.setattr(
        model.optimizer,
        "apply_gradients",
        lambda pairs: main_update.setdefault("vars", [v for _, v in pairs]),
    )
    before = {id(v): v.numpy().copy() for v in model.trainable_variables}
    logs = model.train_step(((v1, v2), tf.constant(y)))
    assert np.isfinite(float(logs["loss/adversary"]))
    adversary_ids = {id(v) for v in adversary}
    assert not adversary_ids & {id(v) for v in main_update["vars"]}
    for v in model.trainable_variables:
        if id(v) not in adversary_ids:
            np.testing.assert_array_equal(v.numpy(), before[id(v)], err_msg=v.path)
    assert any(not np.array_equal(v.numpy(), before[id(v)]) for v in adversary), (
        "the discriminator was not updated"
    )


# --------------------------------------------------------------------------- training smoke tests


@pytest.mark.parametrize(
    "name,arg,overrides",
    [
        ("dim_local", "tiny", {"estimator": "nce"}),
        ("dim_global", "tiny", {"estimator": "dv"}),
        ("dim_local", "amdim_tiny", {"estimator": "jsd"}),
        ("cpc", "tiny", {}),
    ],
)
def test_each_objective_trains_a_few_steps(name, arg, overrides):
    keras.utils.set_random_seed(0)
    config = load_config(name, arg)
    for key, value in overrides.items():
        config.dim[key] = value
    model = build_model(config, steps_per_epoch=10, num_classes=10)
    v1, v2, y = _data()
    ds = tf.data.Dataset.from_tensors(((v1, v2), y)).repeat()
    hist = model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0)
    for key in model.loss_names:
        assert np.isfinite(hist.history[key]).all(), (key, hist.history[key])
    assert model.optimizer.iterations.numpy() == 3
    with tf.GradientTape() as tape:
        logged = model.compute_losses((v1, v2), tf.constant(y), training=True)["logged"]
    variables = model.encoder.trainable_variables
    if arg.startswith("amdim"):
        # DIM on AMDIM's encoder reads r1 and r7: the r5 head is legitimately unused.
        variables = [v for v in variables if "/head5/" not in v.path]
    grads = tape.gradient(logged["loss/total"], variables)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads) > len(grads) // 2


def test_dim_critic_shortcut_starts_near_identity_and_cross_view_reads_view2():
    from amdim_tf.methods import DIMObjective

    keras.utils.set_random_seed(0)
    obj = DIMObjective(
        8,
        (4, 4, 6),
        "nce",
        alpha=1.0,
        beta=1.0,
        gamma=0.0,
        critic_units=16,
        summary_width=8,
        cross_view=True,
    )
    kernel = obj.local_net.get_layer("shortcut").kernel.numpy()[0, 0]  # [6, 16]
    np.testing.assert_array_equal(np.diag(kernel), np.ones(6))
    assert np.abs(kernel - np.eye(6, 16)).max() <= 0.01
    assert obj.metric_names == ("dim/global", "dim/local") and obj.auxiliary_variables == []
    rng = np.random.RandomState(0)
    f1 = {
        "r1": tf.constant(rng.randn(3, 1, 1, 8), tf.float32),
        "local": tf.constant(rng.randn(3, 4, 4, 6), tf.float32),
    }
    f2 = {"r1": f1["r1"], "local": tf.constant(rng.randn(3, 4, 4, 6), tf.float32)}
    same = obj(f1, f1, None)["total"].numpy()
    obj.cross_view = False
    np.testing.assert_allclose(obj(f1, f2, None)["total"].numpy(), same, rtol=1e-6)
    obj.cross_view = True
    assert abs(obj(f1, f2, None)["total"].numpy() - same) > 1e-4


@pytest.mark.parametrize("config_file", ["dim_local.py", "cpc.py"])
def test_encoder_only_restore_of_dim_and_cpc(config_file, tmp_path):
    """evaluate/export restore the encoder alone: every variable must come back."""
    import importlib.util

    import keras

    from amdim_tf.run.checkpoints import RunCheckpoint, restore_parts
    from amdim_tf.run.loader import untrained_encoder

    root = ROOT
    spec = importlib.util.spec_from_file_location("c", os.path.join(root, "configs", config_file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    config.optim.weight_decay = 0.0
    model = build_model(config, 3, 10)
    path = RunCheckpoint(model, str(tmp_path), 3).save(0)
    keras.utils.set_random_seed(5)
    enc = untrained_encoder(config, seed=5)
    restore_parts(path, encoder=enc)
    for a, b in zip(model.encoder.variables, enc.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_dim_prior_adversary_is_loss_scaled_under_mixed_float16():
    # Under float16 the discriminator's gradients underflow without a loss scale of
    # their own (its loss differs from the main one), so it gets its own wrapper.
    keras.utils.set_random_seed(0)
    config = load_config("dim_local", "tiny")
    config.precision = "mixed_float16"
    model = build_model(config, steps_per_epoch=10, num_classes=10)
    assert isinstance(model.auxiliary_optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.auxiliary_optimizer is not model.optimizer
    before = [v.numpy().copy() for v in model.auxiliary_variables]
    v1, v2, y = _data()
    ds = tf.data.Dataset.from_tensors(((v1, v2), y)).repeat()
    hist = model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0)
    assert np.isfinite(hist.history["loss/adversary"]).all(), hist.history
    after = [v.numpy() for v in model.auxiliary_variables]
    assert all(np.isfinite(a).all() for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True)), (
        "the adversary never stepped"
    )
