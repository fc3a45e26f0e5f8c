"""Frozen-feature evaluation: kNN against brute force, linear probe sanity."""

import numpy as np
import tensorflow as tf

from amdim_tf.methods import AMDIMEncoder
from amdim_tf.use import evaluate


def test_knn_matches_brute_force():
    rng = np.random.RandomState(0)
    trx, tr_y = rng.randn(60, 5), rng.randint(0, 3, 60)
    tex, te_y = rng.randn(25, 5), rng.randint(0, 3, 25)
    got = evaluate.knn_accuracy(trx, tr_y, tex, te_y, k=7, batch=4)
    correct = 0
    for x, y in zip(tex, te_y, strict=True):
        cos = trx @ x / (np.linalg.norm(trx, axis=1) * np.linalg.norm(x))
        near = np.argsort(-cos)[:7]
        correct += np.bincount(tr_y[near], minlength=3).argmax() == y
    assert got == correct / 25


def test_linear_probe_separable_vs_random_labels():
    rng = np.random.RandomState(1)
    centers = rng.randn(4, 16) * 4
    y = rng.randint(0, 4, 400)
    x = centers[y] + rng.randn(400, 16)
    assert evaluate.linear_accuracy(x[:300], y[:300], x[300:], y[300:]) > 0.95
    shuffled = rng.permutation(y[:300])
    assert evaluate.linear_accuracy(x[:300], shuffled, x[300:], y[300:]) < 0.5


def test_extract_features_shapes_and_pooling():
    enc = AMDIMEncoder(32, 4, 16, 1)
    images = np.random.rand(10, 32, 32, 3).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(10))).batch(4)
    f, y = evaluate.extract_features(enc, ds)
    assert f.shape == (10, 16) and list(y) == list(range(10))
    f2, _ = evaluate.extract_features(enc, ds, keys=("r1", "r5", "r7"), max_examples=6)
    assert f2.shape == (6, 48)
    np.testing.assert_allclose(f2[:, :16], f[:6], rtol=1e-5, atol=1e-6)
    px, _ = evaluate.pixel_features(ds)
    assert px.shape == (10, 32 * 32 * 3)
