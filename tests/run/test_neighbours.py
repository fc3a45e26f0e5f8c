"""Neighbours: blocked exact top-k and the kNN vote equal NumPy brute force; a group of
near-duplicates larger than k is found whole; non-finite rows are found."""

import numpy as np
import pytest

from amdim_tf.run import features, neighbours


def _brute_force(q, x, k, exclude_self=False):
    sims = neighbours.l2_normalise(q) @ neighbours.l2_normalise(x).T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, 1)


def test_blocked_topk_equals_brute_force_and_leaves_out_only_the_row_itself():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x[7] = x[3]  # an exact duplicate: it must stay a neighbour of row 3 (cosine 1)
    xn = neighbours.l2_normalise(x)
    np.testing.assert_allclose(np.linalg.norm(xn, axis=1), 1.0, rtol=1e-6)
    rows, sims = neighbours.topk_cosine(xn[:50], xn, 5, block=7)
    want_rows, want_sims = _brute_force(x[:50], x, 5)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    np.testing.assert_array_equal(rows[:, 0], np.where(np.arange(50) == 7, 3, np.arange(50)))
    rows, sims = neighbours.topk_cosine(xn, xn, 4, self_offset=0, block=64)
    want_rows, want_sims = _brute_force(x, x, 4, exclude_self=True)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    assert rows[3, 0] == 7 and rows[7, 0] == 3 and sims[3, 0] == pytest.approx(1.0, abs=1e-5)
    assert not np.any(rows == np.arange(300)[:, None])
    # self_rows: the queries are any rows of the references, not a contiguous run.
    picked = np.array([250, 3, 99])
    rows, sims = neighbours.topk_cosine(xn[picked], xn, 4, self_rows=picked, block=2)
    np.testing.assert_array_equal(rows, want_rows[picked])
    with pytest.raises(ValueError, match="k=300"):
        neighbours.topk_cosine(xn, xn, 300, self_offset=0)


def test_knn_votes_and_accuracy_equal_a_numpy_loop():
    rng = np.random.default_rng(2)
    neighbour_labels = rng.integers(-1, 4, (40, 7))  # -1: an unlabelled neighbour
    votes = neighbours.knn_votes(neighbour_labels, 4)
    for row, labels in zip(votes, neighbour_labels, strict=True):
        np.testing.assert_array_equal(row, np.bincount(labels[labels >= 0], minlength=4))

    trx, tr_y = rng.standard_normal((80, 6)), rng.integers(0, 3, 80)
    tex, te_y = rng.standard_normal((30, 6)), rng.integers(0, 3, 30)
    correct = 0
    for x, y in zip(tex, te_y, strict=True):
        cos = trx @ x / (np.linalg.norm(trx, axis=1) * np.linalg.norm(x))
        near = np.argsort(-cos, kind="stable")[:9]
        correct += np.bincount(tr_y[near], minlength=3).argmax() == y
    assert features.knn_accuracy(trx, tr_y, tex, te_y, k=9, batch=8) == correct / 30


def test_a_duplicate_group_larger_than_k_is_found_whole():
    """15 identical rows and k=4: each top-4 holds 4 of its 14 twins; every one of the
    105 pairs must still be found (issue 33 MED 16: 39 of 105 before)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    x[10:25] = x[10]
    xn = neighbours.l2_normalise(x)
    rows, sims = neighbours.topk_cosine(xn, xn, 4, self_offset=0)
    i, j, cos, capped = neighbours.neighbours_above(xn, xn, 0.9999, rows, sims, np.arange(60))
    assert capped == 0
    pairs = {(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist(), strict=True)}
    group = set(range(10, 25))
    assert {p for p in pairs if p[0] in group and p[1] in group} == {
        (a, b) for a in group for b in group if a < b
    }
    assert np.all(cos >= 0.9999)
    # Across two sets (no self row): each of 3 queries has all 15 twins.
    i, j, cos, _ = neighbours.neighbours_above(
        xn[[10, 11, 12]], xn, 0.9999, *neighbours.topk_cosine(xn[[10, 11, 12]], xn, 2)
    )
    assert len(i) == 45 and set(j.tolist()) == group
    # A bound on the widening: 8 neighbours at most, and the 15 twins say so.
    i, _, _, capped = neighbours.neighbours_above(
        xn[[10]], xn, 0.9999, *neighbours.topk_cosine(xn[[10]], xn, 2), max_k=8
    )
    assert len(i) == 8 and capped == 1


def test_finite_rows():
    x = np.ones((4, 3), np.float32)
    x[1, 2], x[3, 0] = np.nan, np.inf
    np.testing.assert_array_equal(neighbours.finite_rows(x), [True, False, True, False])
