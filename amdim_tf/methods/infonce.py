"""The InfoNCE maths shared by AMDIM, CPC and DIM's NCE estimator: pure functions of tensors.

Bachman, Hjelm & Buchwalter (2019), §3.2-3.3, and the official code's `costs.py`
(`NCE_MI_MULTI`): scores of sources against every location of the target images,
the positive ranked by a softmax against every location of every *other* image.
Method-specific estimators live with their objective (`amdim/objective.py`'s
mixture, `dim/objective.py`'s JSD / DV, `cpc/objective.py`'s offsets); this module
imports nothing of ours, and computes in float32 whatever the compute dtype of the
features (mixed precision keeps scores, log-sum-exp and regularisers in float32).
Each function is checked against a NumPy formula in the tests.

Global negatives: `trg` may hold the targets of the *global* batch (gathered
across replicas), while `src` holds only this replica's rows; `pos_offset` says
where this replica's rows sit in the global batch. With one replica it is 0.
The score scale `tclip` and penalty `reg_coeff` have no defaults here: their one
default is `config.loss` in `config_lib.base_config()`.
"""

import tensorflow as tf


def tanh_clip(x: tf.Tensor, clip: float | None) -> tf.Tensor:
    """Soft clip to (-clip, clip): clip * tanh(x / clip) (identity if clip is None)."""
    if clip is None:
        return x
    return clip * tf.tanh(x / clip)


def masked_infonce_log_probs(scores: tf.Tensor, pos_offset: int | tf.Tensor = 0) -> tf.Tensor:
    """Log softmax of each positive among itself and every location of the other images.

    For source row i and target location l, the positive is
    scores[i, i + pos_offset, l]; the negatives are all locations of all *other*
    target images, shared by the L positives of i. The source's own other
    locations are excluded exactly (the official DIM code keeps them at a score
    of -10 instead). `masked_infonce` is minus its mean; the mixture objective
    (§3.7) needs it per location.

    Args:
        scores: [b, B, L] scores of this replica's b sources against the L
            locations of the B target images of the (global) batch.
        pos_offset: index in the B targets of this replica's first image.
    Returns:
        [b, L] float32: log p(positive l of source i | its negatives).
    """
    scores = tf.cast(scores, tf.float32)  # [b, B, L]
    n_src = tf.shape(scores)[0]
    # With one image there are no negatives and the loss would be a silent 0.
    tf.debugging.assert_greater_equal(
        tf.shape(scores)[1],
        2,
        message="InfoNCE needs at least 2 images in the (global) batch "
        "for negatives; raise config.train.batch_size.",
    )
    is_pos = positive_mask(scores, pos_offset)  # [b, B]
    pos = positive_scores(scores, pos_offset)  # [b, L]
    neg = tf.where(is_pos[:, :, None], tf.constant(-float("inf")), scores)  # [b, B, L]
    neg_lse = tf.reduce_logsumexp(tf.reshape(neg, [n_src, -1]), axis=1, keepdims=True)  # [b, 1]
    # log(exp(pos) / (exp(pos) + sum exp(neg))), stable through logaddexp.
    log_prob = pos - tf.experimental.numpy.logaddexp(pos, neg_lse)  # [b, L]
    return log_prob


def masked_infonce(scores: tf.Tensor, pos_offset: int | tf.Tensor = 0) -> tf.Tensor:
    """-mean log softmax of each positive among itself and every location of the other images.

    The InfoNCE shared by AMDIM (after scaling and clipping its scores) and DIM's
    infoNCE estimator (on raw critic scores): minus the mean of
    `masked_infonce_log_probs` (see there for the positives and negatives).

    Args:
        scores: [b, B, L] scores of this replica's b sources against the L
            locations of the B target images of the (global) batch.
        pos_offset: index in the B targets of this replica's first image.
    Returns:
        float32 scalar.
    """
    return -tf.reduce_mean(masked_infonce_log_probs(scores, pos_offset))  # []


def infonce(
    src: tf.Tensor,
    trg: tf.Tensor,
    tclip: float | None,
    reg_coeff: float,
    pos_offset: int | tf.Tensor = 0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """AMDIM's NCE cost of predicting every location of `trg` from `src` (§3.2-3.3).

    Scores are dot products scaled by 1/sqrt(D), penalised by reg_coeff *
    mean(raw^2) and soft-clipped to (-tclip, tclip) before `masked_infonce`.

    Args:
        src: [b, D] source vectors (this replica's batch).
        trg: [B, L, D] target locations (the global batch; B >= b + pos_offset).
        tclip: soft-clip value for the scores (20 in the paper; None = no clip).
        reg_coeff: weight of the score penalty mean(s^2) on raw scores.
        pos_offset: index in `trg` of this replica's first image.

    Returns:
        (loss, reg): float32 scalars.
    """
    src = tf.cast(src, tf.float32)  # [b, D]
    trg = tf.cast(trg, tf.float32)  # [B, L, D]
    dim = tf.cast(tf.shape(src)[-1], tf.float32)  # []
    raw = tf.einsum("bd,cld->bcl", src, trg) / tf.sqrt(dim)  # [b, B, L]
    reg = reg_coeff * tf.reduce_mean(tf.square(raw))  # []
    return masked_infonce(tanh_clip(raw, tclip), pos_offset), reg  # [], []


def infonce_component_log_probs(
    src: tf.Tensor,
    trg: tf.Tensor,
    tclip: float | None,
    reg_coeff: float,
    pos_offset: int | tf.Tensor = 0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-location NCE log-probabilities of k source components (§3.7's s_j(i)).

    `infonce`'s scores (scaled by 1/sqrt(D), penalised, soft-clipped) for each of
    the k components of every source, each ranked against the same negatives as
    `infonce`: every location of every other target image, scored by that
    component. With k = 1, minus the mean of the result is `infonce`'s loss.

    Args:
        src: [b, k, D] k source vectors per image (this replica's batch).
        trg: [B, L, D] target locations (the global batch).
        tclip: soft-clip value for the scores.
        reg_coeff: weight of the score penalty mean(s^2) over every component's raw scores.
        pos_offset: index in `trg` of this replica's first image.

    Returns:
        (log_probs, reg): [b, L, k] float32 log p(positive location | component j), and
        a float32 scalar.
    """
    k = src.shape[1]
    if k is None:
        raise ValueError(f"src needs a static number of components, received shape {src.shape}.")
    src = tf.cast(src, tf.float32)  # [b, k, D]
    trg = tf.cast(trg, tf.float32)  # [B, L, D]
    dim = tf.cast(tf.shape(src)[-1], tf.float32)  # []
    raw = tf.einsum("bkd,cld->kbcl", src, trg) / tf.sqrt(dim)  # [k, b, B, L]
    reg = reg_coeff * tf.reduce_mean(tf.square(raw))  # []
    clipped = tanh_clip(raw, tclip)  # [k, b, B, L]
    # One masked softmax per component: component j's negatives are its own scores.
    log_probs = [masked_infonce_log_probs(clipped[j], pos_offset) for j in range(k)]  # k x [b, L]
    return tf.stack(log_probs, axis=-1), reg  # [b, L, k], []


def flatten_locations(feature_map: tf.Tensor) -> tf.Tensor:
    """[B, H, W, D] -> [B, H*W, D]."""
    shape = tf.shape(feature_map)
    return tf.reshape(feature_map, [shape[0], shape[1] * shape[2], shape[3]])  # [B, HW, D]


def sample_locations(feature_map: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """Pick one location per image: feature_map [B, H, W, D], index [B] in [0, H*W).

    Returns [B, D]."""
    flat = flatten_locations(feature_map)  # [B, HW, D]
    return tf.gather(flat, index, axis=1, batch_dims=1)  # [B, D]


def positive_mask(scores: tf.Tensor, pos_offset: int | tf.Tensor) -> tf.Tensor:
    """[b, B] bool, True where target c is source i's own image (c == i + pos_offset)."""
    shape = tf.shape(scores)
    pos_index = tf.range(shape[0]) + pos_offset  # [b]
    return tf.equal(pos_index[:, None], tf.range(shape[1])[None, :])  # [b, B]


def positive_scores(scores: tf.Tensor, pos_offset: int | tf.Tensor) -> tf.Tensor:
    """[b, L]: scores[i, i + pos_offset, :] of scores [b, B, L]."""
    pos_index = tf.range(tf.shape(scores)[0]) + pos_offset  # [b]
    return tf.gather(scores, pos_index, axis=1, batch_dims=1)  # [b, L]
