"""Pure loss maths: the masked InfoNCE (AMDIM, DIM), the mixture NCE, DIM's and CPC's estimators, probes.

Bachman, Hjelm & Buchwalter (2019), §3.2-3.3, and the official code's
`costs.py` (NCE_MI_MULTI, loss_xent). Everything here is a function of tensors,
imports nothing of ours, and computes in float32 whatever the compute dtype of
the features (mixed precision keeps scores, log-sum-exp and regularisers in
float32). Each function is checked against a NumPy formula in the tests.

Global negatives: `trg` may hold the targets of the *global* batch (gathered
across replicas), while `src` holds only this replica's rows; `pos_offset` says
where this replica's rows sit in the global batch. With one replica it is 0.
"""

import tensorflow as tf


def tanh_clip(x, clip):
    """Soft clip to (-clip, clip): clip * tanh(x / clip) (identity if clip is None)."""
    if clip is None:
        return x
    return clip * tf.tanh(x / clip)


def masked_infonce_log_probs(scores, pos_offset=0):
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
    is_pos = _positive_mask(scores, pos_offset)  # [b, B]
    pos = _positive_scores(scores, pos_offset)  # [b, L]
    neg = tf.where(is_pos[:, :, None], tf.constant(-float("inf")), scores)  # [b, B, L]
    neg_lse = tf.reduce_logsumexp(tf.reshape(neg, [n_src, -1]), axis=1, keepdims=True)  # [b, 1]
    # log(exp(pos) / (exp(pos) + sum exp(neg))), stable through logaddexp.
    log_prob = pos - tf.experimental.numpy.logaddexp(pos, neg_lse)  # [b, L]
    return log_prob


def masked_infonce(scores, pos_offset=0):
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
    return -tf.reduce_mean(masked_infonce_log_probs(scores, pos_offset))


def infonce(src, trg, tclip=20.0, reg_coeff=0.05, pos_offset=0):
    """AMDIM's NCE cost of predicting every location of `trg` from `src` (§3.2-3.3).

    Scores are dot products scaled by 1/sqrt(D), penalised by reg_coeff *
    mean(raw^2) and soft-clipped to (-tclip, tclip) before `masked_infonce`.

    Args:
        src: [b, D] source vectors (this replica's batch).
        trg: [B, L, D] target locations (the global batch; B >= b + pos_offset).
        tclip: soft-clip value for the scores (20 in the paper).
        reg_coeff: weight of the score penalty mean(s^2) on raw scores.
        pos_offset: index in `trg` of this replica's first image.

    Returns:
        (loss, reg): float32 scalars.
    """
    src = tf.cast(src, tf.float32)  # [b, D]
    trg = tf.cast(trg, tf.float32)  # [B, L, D]
    dim = tf.cast(tf.shape(src)[-1], tf.float32)
    raw = tf.einsum("bd,cld->bcl", src, trg) / tf.sqrt(dim)  # [b, B, L]
    reg = reg_coeff * tf.reduce_mean(tf.square(raw))  # []
    return masked_infonce(tanh_clip(raw, tclip), pos_offset), reg


def infonce_component_log_probs(src, trg, tclip=20.0, reg_coeff=0.05, pos_offset=0):
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
    dim = tf.cast(tf.shape(src)[-1], tf.float32)
    raw = tf.einsum("bkd,cld->kbcl", src, trg) / tf.sqrt(dim)  # [k, b, B, L]
    reg = reg_coeff * tf.reduce_mean(tf.square(raw))  # []
    clipped = tanh_clip(raw, tclip)  # [k, b, B, L]
    # One masked softmax per component: component j's negatives are its own scores.
    log_probs = [masked_infonce_log_probs(clipped[j], pos_offset) for j in range(k)]  # k x [b, L]
    return tf.stack(log_probs, axis=-1), reg  # [b, L, k], []


def mixture_nce(log_probs, alpha=1.0):
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
    k = tf.cast(tf.shape(s)[-1], tf.float32)
    scaled = s / alpha  # [..., k]
    objective = alpha * (tf.reduce_logsumexp(scaled, axis=-1) - tf.math.log(k))  # [...]
    q = tf.nn.softmax(scaled, axis=-1)  # [..., k]
    return objective, q


def sample_locations(feature_map, index):
    """Pick one location per image: feature_map [B, H, W, D], index [B] in [0, H*W).

    Returns [B, D]."""
    flat = flatten_locations(feature_map)  # [B, HW, D]
    return tf.gather(flat, index, axis=1, batch_dims=1)  # [B, D]


def flatten_locations(feature_map):
    """[B, H, W, D] -> [B, H*W, D]."""
    shape = tf.shape(feature_map)
    return tf.reshape(feature_map, [shape[0], shape[1] * shape[2], shape[3]])


def _positive_mask(scores, pos_offset):
    """[b, B] bool, True where target c is source i's own image (c == i + pos_offset)."""
    shape = tf.shape(scores)
    pos_index = tf.range(shape[0]) + pos_offset  # [b]
    return tf.equal(pos_index[:, None], tf.range(shape[1])[None, :])  # [b, B]


def _positive_scores(scores, pos_offset):
    """[b, L]: scores[i, i + pos_offset, :]."""
    pos_index = tf.range(tf.shape(scores)[0]) + pos_offset  # [b]
    return tf.gather(scores, pos_index, axis=1, batch_dims=1)  # [b, L]


def probe_xent(logits, labels, clip=10.0, reg_coeff=1e-3):
    """Cross-entropy of an online probe, as the official `loss_xent`.

    CE(tanh_clip(logits, 10), labels) + 1e-3 * mean(logits^2), averaged over the
    labelled rows only: labels < 0 mark unlabelled images (e.g. STL-10's
    unlabeled split), which must neither teach nor be scored.

    Args:
        logits: [N, K]; labels: [N] int (-1 = unlabelled).
    Returns:
        float32 scalar (0 if no row is labelled).
    """
    logits = tf.cast(logits, tf.float32)  # [N, K]
    labels = tf.cast(labels, tf.int32)  # [N]
    valid = tf.cast(labels >= 0, tf.float32)  # [N]
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.maximum(labels, 0), logits=tanh_clip(logits, clip)
    )  # [N]
    n_valid = tf.maximum(tf.reduce_sum(valid), 1.0)
    reg = reg_coeff * tf.reduce_mean(tf.square(logits))
    return tf.reduce_sum(xent * valid) / n_valid + reg


# -- Deep InfoMax and CPC ---------------------------------------------------------------
# Deep InfoMax (Hjelm et al., ICLR 2019, §3.1 and the official code's
# `cortex_DIM/functions/dim_losses.py`) and CPC (van den Oord et al. 2018;
# Hénaff et al. 2019). The DIM estimators take critic scores
# scores[i, c, l] = T(global of image i, location l of image c) for the b
# source images of this replica against the B target images of the global
# batch; the positive pair of source i is target c = i + pos_offset. Each
# returns a loss to *minimise* (the negated MI lower bound).

_LOG2 = 0.6931471805599453


def dim_jsd_loss(scores, pos_offset=0):
    """Negated Jensen-Shannon MI estimator of DIM (the paper's default, eq. 4).

    E_pos = mean over positive (i, l) of log 2 - softplus(-u),
    E_neg = mean over negative (i, c != i, l) of softplus(u) - log 2,
    loss = E_neg - E_pos (as the official `fenchel_dual_loss` with 'JSD').

    Args:
        scores: [b, B, L] critic scores (L = 1 for global DIM).
        pos_offset: index in the B targets of this replica's first image.
    Returns:
        float32 scalar.
    """
    scores = tf.cast(scores, tf.float32)  # [b, B, L]
    is_pos = _positive_mask(scores, pos_offset)  # [b, B]
    e_pos = tf.reduce_mean(_LOG2 - tf.nn.softplus(-_positive_scores(scores, pos_offset)))  # []
    neg_terms = tf.nn.softplus(scores) - _LOG2  # [b, B, L]
    neg_w = tf.cast(~is_pos, tf.float32)[:, :, None] * tf.ones_like(scores)  # [b, B, L]
    e_neg = tf.reduce_sum(neg_terms * neg_w) / tf.maximum(tf.reduce_sum(neg_w), 1.0)  # []
    return e_neg - e_pos


def dim_dv_loss(scores, pos_offset=0):
    """Negated Donsker-Varadhan MI bound of DIM (MINE's estimator, eq. 2).

    E_pos = mean over positive (i, l) of u; E_neg = log mean over all negative
    (i, c != i, l) of exp(u), one log-mean-exp over the whole batch as the
    official `donsker_varadhan_loss`, but through logsumexp with the positives
    excluded exactly (the official code subtracts 100 from them instead).
    loss = E_neg - E_pos. Over several replicas each replica computes its own
    log-mean-exp, so the averaged loss is not the global-batch DV bound.

    Args / returns: as `dim_jsd_loss`.
    """
    scores = tf.cast(scores, tf.float32)  # [b, B, L]
    is_pos = _positive_mask(scores, pos_offset)  # [b, B]
    e_pos = tf.reduce_mean(_positive_scores(scores, pos_offset))  # []
    neg = tf.where(is_pos[:, :, None], tf.constant(-float("inf")), scores)  # [b, B, L]
    n_neg = tf.reduce_sum(tf.cast(~is_pos, tf.float32)) * tf.cast(tf.shape(scores)[2], tf.float32)
    tf.debugging.assert_positive(
        n_neg,
        message="DIM's DV estimator needs at least 2 images in the (global) batch for negatives.",
    )
    e_neg = tf.reduce_logsumexp(neg) - tf.math.log(n_neg)  # []
    return e_neg - e_pos


def dim_nce_loss(scores, pos_offset=0):
    """Negated infoNCE estimator of DIM (eq. 5, the official `nce_loss`).

    `masked_infonce` on the critic scores as they are: unlike AMDIM's `infonce`,
    DIM's scores are neither scaled by 1/sqrt(D) nor clipped.

    Args / returns: as `dim_jsd_loss`.
    """
    return masked_infonce(scores, pos_offset)


def prior_discriminator_loss(d_prior, d_encoded):
    """Discriminator side of DIM's prior matching (GAN measure, official `Discriminator`).

    -(E_P[-softplus(-D(p))] - E_Q[softplus(D(q))]) = mean softplus(-D(p)) + mean softplus(D(q)):
    the binary cross-entropy of telling prior samples (label 1) from encoded ones (label 0).
    Args: d_prior [N, 1], d_encoded [M, 1] logits. Returns a float32 scalar.
    """
    d_prior = tf.cast(d_prior, tf.float32)  # [N, 1]
    d_encoded = tf.cast(d_encoded, tf.float32)  # [M, 1]
    return tf.reduce_mean(tf.nn.softplus(-d_prior)) + tf.reduce_mean(tf.nn.softplus(d_encoded))


def nonsaturating_generator_loss(d_encoded):
    """Encoder side of prior matching: -mean log sigmoid(D(q)) = mean softplus(-D(q)).

    The non-saturating GAN generator loss (Goodfellow et al. 2014), as the
    official `generator_loss(..., 'non-saturating')`. Returns a float32 scalar.
    """
    return tf.reduce_mean(tf.nn.softplus(-tf.cast(d_encoded, tf.float32)))


def cpc_infonce(preds, targets, offset, pos_offset=0):
    """CPC's InfoNCE for predictions `offset` rows below (van den Oord et al. 2018, eq. 4).

    The prediction made at grid position (n, i, j) targets the patch embedding
    targets[n + pos_offset, i + offset, j]; the negatives are *all other*
    patches of the (global) batch, other images' and the same image's alike
    (CPC v2, Hénaff et al. 2019, §3.1). Scores are plain dot products.

    Args:
        preds: [b, H - offset, W, D] predictions W_k c_{i,j} for rows i < H - offset.
        targets: [B, H, W, D] patch embeddings z of the global batch.
        offset: k >= 1, the row offset predicted (a Python int).
        pos_offset: index in `targets` of this replica's first image.
    Returns:
        float32 scalar: -mean over predictions of log softmax(score of the positive).
    """
    preds = tf.cast(preds, tf.float32)  # [b, H-k, W, D]
    targets = tf.cast(targets, tf.float32)  # [B, H, W, D]
    p_shape = tf.shape(preds)
    t_shape = tf.shape(targets)
    n_src, rows, width = p_shape[0], p_shape[1], p_shape[2]
    height = t_shape[1]
    flat_p = tf.reshape(preds, [-1, p_shape[3]])  # [b*(H-k)*W, D]
    flat_t = tf.reshape(targets, [-1, t_shape[3]])  # [B*H*W, D]
    logits = tf.matmul(flat_p, flat_t, transpose_b=True)  # [b*(H-k)*W, B*H*W]
    n = tf.range(n_src)[:, None, None]  # [b, 1, 1]
    i = tf.range(rows)[None, :, None]  # [1, H-k, 1]
    j = tf.range(width)[None, None, :]  # [1, 1, W]
    # Row-major index of targets[n + pos_offset, i + offset, j] in flat_t.
    pos = ((n + pos_offset) * height + i + offset) * width + j  # [b, H-k, W]
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.reshape(pos, [-1]), logits=logits
    )  # [b*(H-k)*W]
    return tf.reduce_mean(xent)
