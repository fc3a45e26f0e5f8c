"""Nearest neighbours by cosine: the one home of normalising, exact top-k and the kNN vote.

    x = l2_normalise(features)                       # rows of unit length
    rows, sims = topk_cosine(queries, x, k)          # exact, blocked, never N x N
    votes = knn_votes(labels[rows], num_classes)     # [Q, C]; label -1 casts no vote

Every caller that ranks images by cosine goes through here: the frozen kNN evaluation and
the online kNN monitor (`run/features.knn_accuracy`), embed's neighbour figure, search and
inspection. A non-finite row (NaN or inf from a broken encoder or a damaged file) has no
cosine: `finite_rows` finds them so that callers skip and count them instead of letting one
rank above exact matches or move a statistic.

`topk_cosine` scores a block of queries against all N rows ([block, N] floats, at most
`BLOCK_FLOATS`) and keeps the k best per row with `tf.math.top_k` (a heap, ~10x faster
than `np.argpartition` here). One query against 60,000 rows of 512 floats is a 123 MB
matrix-vector product: a few milliseconds, so no approximate index is used.
"""

import numpy as np
import tensorflow as tf

from amdim_tf.errors import UserError

BLOCK_FLOATS = 2**25  # similarity floats per block (128 MB)


def l2_normalise(x, dtype=np.float32) -> np.ndarray:
    """Rows of `x` scaled to unit length (as `dtype`), so dot products are cosines.

    A row of NaN or inf stays non-finite (see `finite_rows`)."""
    x = np.asarray(x, dtype)
    with np.errstate(invalid="ignore"):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def finite_rows(x) -> np.ndarray:
    """bool [N]: the rows of `x` [N, D] with no NaN or inf (the only rows with a cosine)."""
    return np.all(np.isfinite(np.asarray(x)), axis=1)


@tf.function(reduce_retracing=True)
def _block_topk(queries, refs, k):
    sims = tf.matmul(queries, refs, transpose_b=True)  # [B, N]
    return tf.math.top_k(sims, k)  # values [B, k], indices [B, k]


def topk_cosine(queries, refs, k: int, self_offset: int | None = None, block: int = 0,
                self_rows=None):  # fmt: skip
    """(rows int64 [Q, k], cosines float32 [Q, k]) of the k nearest `refs` rows per query.

    Args:
        queries: float32 [Q, D], rows L2-normalised.
        refs: float32 [N, D] (array or tensor), rows L2-normalised (held whole; only
            [block, N] is scored at a time).
        k: neighbours per query (at most N, or N - 1 when each query's own row is left out).
        self_offset: the queries are refs[self_offset : self_offset + Q]: each query's own
            row is left out (by row, not by value, so an exact duplicate still counts).
        block: queries scored per step (0 = as many as fit `BLOCK_FLOATS`).
        self_rows: int [Q], instead of `self_offset`: the row of `refs` each query is.

    Sorted by decreasing cosine; ties keep the lower row first (`tf.math.top_k`).
    """
    queries = np.asarray(queries, np.float32)
    # A tensor is used as it is: an index converts its features once, not per query.
    refs_t = refs if tf.is_tensor(refs) else tf.constant(np.asarray(refs, np.float32))
    n = int(refs_t.shape[0])
    if self_offset is not None:
        self_rows = self_offset + np.arange(len(queries))
    extra = 0 if self_rows is None else 1
    if not 0 < k <= n - extra:
        raise UserError(f"k={k} neighbours asked of {n} rows; use 1 <= k <= {n - extra}.")
    block = block or max(1, min(4096, BLOCK_FLOATS // max(n, 1)))
    rows = np.zeros((len(queries), k), np.int64)
    sims = np.zeros((len(queries), k), np.float32)
    for start in range(0, len(queries), block):
        q = queries[start : start + block]  # [B, D]
        values, indices = _block_topk(tf.constant(q), refs_t, tf.constant(k + extra))
        values, indices = values.numpy(), indices.numpy().astype(np.int64)  # [B, k(+1)]
        if extra:
            own = np.asarray(self_rows[start : start + len(q)])  # [B]
            is_self = indices == own[:, None]  # [B, k+1]
            # Stable: non-self entries keep their order; a row without its own index
            # among the k+1 (ties at the boundary) drops its last, k+1-th entry.
            keep = np.argsort(is_self, axis=1, kind="stable")[:, :k]  # [B, k]
            values = np.take_along_axis(values, keep, 1)
            indices = np.take_along_axis(indices, keep, 1)
        rows[start : start + len(q)] = indices
        sims[start : start + len(q)] = values
    return rows, sims


def neighbours_above(queries, refs, threshold: float, rows, sims, self_rows=None,
                     max_k: int = 0):  # fmt: skip
    """Every (query, ref row, cosine) at or above `threshold`, from a top-k (`rows`, `sims`
    of `topk_cosine`) widened for the queries whose k-th neighbour is still above it, so a
    group of near-duplicates larger than k is counted whole.

    max_k: widen to at most this many neighbours per query (0 = no bound; a threshold
        below every cosine would then list all N x N pairs).

    Returns (query int64 [P], ref int64 [P], cosine float32 [P], capped): by query then
    rank; capped counts the queries still at or above the threshold at `max_k` neighbours.
    """
    n = int(np.shape(refs)[0])
    limit = n - (0 if self_rows is None else 1)
    limit = min(limit, max(int(max_k), rows.shape[1])) if max_k else limit
    found = {}
    todo = full = np.arange(len(rows))
    k = rows.shape[1]
    while len(todo):
        for q in todo:
            found[int(q)] = (rows[q], sims[q])
        full = todo[sims[todo, -1] >= threshold]
        if k >= limit or not len(full):
            break
        k = min(2 * k, limit)
        own = None if self_rows is None else np.asarray(self_rows)[full]
        wider_rows, wider_sims = topk_cosine(np.asarray(queries)[full], refs, k, self_rows=own)
        rows = np.zeros((len(sims), k), np.int64)
        sims = np.full((len(sims), k), -np.inf, np.float32)
        rows[full], sims[full] = wider_rows, wider_sims
        todo = full
    capped = int(len(full)) if k >= limit and k < n - (self_rows is not None) else 0
    out_q, out_r, out_c = [], [], []
    for q in sorted(found):
        r, s = found[q]
        above = s >= threshold
        out_q.append(np.full(int(above.sum()), q, np.int64))
        out_r.append(r[above])
        out_c.append(s[above])
    if not out_q:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), capped
    return np.concatenate(out_q), np.concatenate(out_r), np.concatenate(out_c), capped


def knn_votes(neighbour_labels, num_classes: int) -> np.ndarray:
    """int64 [M, num_classes]: per row, how many of its neighbours carry each label.

    neighbour_labels: int [M, k]; a label of -1 (unlabelled neighbour) casts no vote.
    The predicted label is `votes.argmax(1)`: ties go to the lowest label, deterministically.
    """
    neighbour_labels = np.asarray(neighbour_labels)
    votes = np.zeros((len(neighbour_labels), num_classes), np.int64)  # [M, C]
    which, col = np.nonzero(neighbour_labels >= 0)
    np.add.at(votes, (which, neighbour_labels[which, col]), 1)
    return votes
