"""The shared InfoNCE maths (methods/infonce.py), AMDIM's objective and the probes' loss against
NumPy transcriptions of the formulas in the paper / official code."""

from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from amdim_tf.methods import AMDIMObjective, infonce
from amdim_tf.run.probes import probe_xent


def np_infonce(src, trg, tclip, reg_coeff, pos_offset=0):
    """Loop-level reference: for each source b and location l, the positive
    against every location of every other image."""
    b, d = src.shape
    n_trg, n_loc, _ = trg.shape
    raw = np.zeros((b, n_trg, n_loc))
    for i in range(b):
        for c in range(n_trg):
            for loc in range(n_loc):
                raw[i, c, loc] = np.dot(src[i], trg[c, loc]) / np.sqrt(d)
    reg = reg_coeff * np.mean(raw**2)
    s = tclip * np.tanh(raw / tclip)
    terms = []
    for i in range(b):
        p = i + pos_offset
        negs = np.concatenate([s[i, c] for c in range(n_trg) if c != p])
        for loc in range(n_loc):
            pos = s[i, p, loc]
            denom = np.exp(pos) + np.sum(np.exp(negs))
            terms.append(np.log(np.exp(pos) / denom))
    return -np.mean(terms), reg


def np_amdim(f1, f2, loc1, loc2, tclip, reg_coeff):
    flat = lambda x: x.reshape(x.shape[0], -1, x.shape[-1])
    r1_1, r1_2 = f1["r1"].reshape(len(loc1), -1), f2["r1"].reshape(len(loc2), -1)
    r5_1 = flat(f1["r5"])[np.arange(len(loc1)), loc1]
    r5_2 = flat(f2["r5"])[np.arange(len(loc2)), loc2]
    pairs = {
        "nce_1t5": [
            np_infonce(r1_1, flat(f2["r5"]), tclip, reg_coeff),
            np_infonce(r1_2, flat(f1["r5"]), tclip, reg_coeff),
        ],
        "nce_1t7": [
            np_infonce(r1_1, flat(f2["r7"]), tclip, reg_coeff),
            np_infonce(r1_2, flat(f1["r7"]), tclip, reg_coeff),
        ],
        "nce_5t5": [
            np_infonce(r5_1, flat(f2["r5"]), tclip, reg_coeff),
            np_infonce(r5_2, flat(f1["r5"]), tclip, reg_coeff),
        ],
    }
    out = {k: 0.5 * (v[0][0] + v[1][0]) for k, v in pairs.items()}
    out["reg"] = 0.5 * sum(v[0][1] + v[1][1] for v in pairs.values())
    out["total"] = out["nce_1t5"] + out["nce_1t7"] + out["nce_5t5"] + out["reg"]
    return out


@pytest.mark.parametrize("scale,tclip", [(1.0, 20.0), (8.0, 20.0), (3.0, 5.0)])
def test_infonce_matches_numpy(scale, tclip):
    rng = np.random.RandomState(0)
    src = rng.randn(4, 16) * scale
    trg = rng.randn(4, 5, 16) * scale
    loss, reg = infonce.infonce(
        tf.constant(src, tf.float32), tf.constant(trg, tf.float32), tclip, 0.05
    )
    ref_loss, ref_reg = np_infonce(src, trg, tclip, 0.05)
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reg.numpy(), ref_reg, rtol=1e-5, atol=1e-5)


def test_infonce_global_targets_with_offset():
    """A replica's rows against the global batch: positives at pos_offset + i."""
    rng = np.random.RandomState(1)
    src = rng.randn(3, 8)
    trg = rng.randn(6, 4, 8)
    loss, reg = infonce.infonce(
        tf.constant(src, tf.float32), tf.constant(trg, tf.float32), 20.0, 0.05, pos_offset=3
    )
    ref_loss, ref_reg = np_infonce(src, trg, 20.0, 0.05, pos_offset=3)
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reg.numpy(), ref_reg, rtol=1e-5, atol=1e-5)


def test_infonce_positive_indexing_matters():
    """Aligned positives give a lower loss than the same targets shuffled."""
    rng = np.random.RandomState(2)
    src = rng.randn(6, 32).astype("float32")
    trg = np.repeat(src[:, None, :], 3, axis=1) * 3 + 0.1 * rng.randn(6, 3, 32).astype("float32")
    aligned, _ = infonce.infonce(src, trg, 20.0, 0.05)
    shuffled, _ = infonce.infonce(src, trg[::-1].copy(), 20.0, 0.05)
    assert float(aligned) < float(shuffled) - 1.0


def test_amdim_objective_matches_numpy_per_term():
    rng = np.random.RandomState(3)
    b, d = 4, 12
    mk = lambda: {
        "r1": rng.randn(b, 1, 1, d),
        "r5": rng.randn(b, 5, 5, d),
        "r7": rng.randn(b, 7, 7, d),
    }
    f1, f2 = mk(), mk()
    loc1, loc2 = rng.randint(0, 25, b), rng.randint(0, 25, b)
    tf_f = lambda f: {k: tf.constant(v, tf.float32) for k, v in f.items()}
    # The objective draws the 5->5 source locations itself: hand it ours.
    draws = lambda shape, *a, **k: tf.constant(np.stack([loc1, loc2]), tf.int32)
    with mock.patch("keras.random.randint", draws):
        out = AMDIMObjective(d, 20.0, 0.05)(tf_f(f1), tf_f(f2))
    ref = np_amdim(f1, f2, loc1, loc2, 20.0, 0.05)
    names = {
        "nce/1t5": "nce_1t5",
        "nce/1t7": "nce_1t7",
        "nce/5t5": "nce_5t5",
        "loss/reg": "reg",
        "total": "total",
    }
    for key, ref_key in names.items():
        np.testing.assert_allclose(
            out[key].numpy(), ref[ref_key], rtol=1e-5, atol=1e-5, err_msg=key
        )


def test_infonce_is_float32_for_half_inputs():
    src = tf.random.normal([4, 8], dtype=tf.float16)
    trg = tf.random.normal([4, 3, 8], dtype=tf.float16)
    loss, reg = infonce.infonce(src, trg, 20.0, 0.05)
    assert loss.dtype == tf.float32 and reg.dtype == tf.float32


def test_infonce_is_stable_for_huge_scores():
    src = tf.constant(np.full((3, 4), 1e4), tf.float32)
    trg = tf.constant(np.full((3, 2, 4), 1e4), tf.float32)
    loss, _ = infonce.infonce(src, trg, None, 0.05)
    assert np.isfinite(loss.numpy())


def test_probe_xent_matches_numpy_and_ignores_unlabelled():
    rng = np.random.RandomState(4)
    logits = rng.randn(6, 5) * 15
    labels = np.array([0, 3, -1, 4, -1, 1])
    got = probe_xent(tf.constant(logits, tf.float32), tf.constant(labels))
    clipped = 10 * np.tanh(logits / 10)
    logp = clipped - np.log(np.exp(clipped).sum(1, keepdims=True))
    keep = labels >= 0
    ref = -np.mean(logp[keep, labels[keep]]) + 1e-3 * np.mean(logits**2)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5)
