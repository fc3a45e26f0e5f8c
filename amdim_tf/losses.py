"""Pure loss functions: AMDIM's multiscale InfoNCE and the probes' cross-entropy.

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


def infonce(src, trg, tclip=20.0, reg_coeff=0.05, pos_offset=0):
    """InfoNCE of predicting every location of `trg` from `src` (AMDIM's NCE cost).

    For each source row b and each target location l, the positive is trg[b', l]
    with b' = b + pos_offset (the same image, other view); the negatives are all
    locations of all other images in `trg`, shared by the L positives of b.

    Args:
        src: [b, D] source vectors (this replica's batch).
        trg: [B, L, D] target locations (the global batch; B >= b + pos_offset).
        tclip: soft-clip value for the scores (20 in the paper).
        reg_coeff: weight of the score penalty mean(s^2) on raw scores.
        pos_offset: index in `trg` of this replica's first image.

    Returns:
        (loss, reg): float32 scalars; loss = -mean_{b,l} log softmax of the
        positive among {positive} + negatives of b; reg = reg_coeff * mean(raw^2).
    """
    src = tf.cast(src, tf.float32)                                     # [b, D]
    trg = tf.cast(trg, tf.float32)                                     # [B, L, D]
    n_src = tf.shape(src)[0]
    n_trg = tf.shape(trg)[0]
    dim = tf.cast(tf.shape(src)[-1], tf.float32)
    # With one image there are no negatives and the loss would be a silent 0.
    tf.debugging.assert_greater_equal(
        n_trg, 2, message="InfoNCE needs at least 2 images in the (global) batch for negatives; "
                          "raise config.train.batch_size.")
    raw = tf.einsum("bd,cld->bcl", src, trg) / tf.sqrt(dim)            # [b, B, L]
    reg = reg_coeff * tf.reduce_mean(tf.square(raw))                   # []
    scores = tanh_clip(raw, tclip)                                     # [b, B, L]
    pos_index = tf.range(n_src) + pos_offset                           # [b]
    is_pos = tf.equal(pos_index[:, None], tf.range(n_trg)[None, :])    # [b, B]
    pos = tf.gather(scores, pos_index, axis=1, batch_dims=1)           # [b, L]
    neg = tf.where(is_pos[:, :, None], tf.constant(-float("inf")), scores)  # [b, B, L]
    neg_lse = tf.reduce_logsumexp(tf.reshape(neg, [n_src, -1]), axis=1, keepdims=True)  # [b, 1]
    # log(exp(pos) / (exp(pos) + sum exp(neg))), stable through logaddexp.
    log_prob = pos - tf.experimental.numpy.logaddexp(pos, neg_lse)    # [b, L]
    return -tf.reduce_mean(log_prob), reg


def sample_locations(feature_map, index):
    """Pick one location per image: feature_map [B, H, W, D], index [B] in [0, H*W).

    Returns [B, D]."""
    shape = tf.shape(feature_map)
    flat = tf.reshape(feature_map, [shape[0], shape[1] * shape[2], shape[3]])  # [B, HW, D]
    return tf.gather(flat, index, axis=1, batch_dims=1)                         # [B, D]


def flatten_locations(feature_map):
    """[B, H, W, D] -> [B, H*W, D]."""
    shape = tf.shape(feature_map)
    return tf.reshape(feature_map, [shape[0], shape[1] * shape[2], shape[3]])


def amdim_objective(feats1, feats2, loc1, loc2, trg1=None, trg2=None, tclip=20.0,
                    reg_coeff=0.05, pos_offset=0):
    """AMDIM's multiscale objective over the 1->5, 1->7 and 5->5 pairs.

    Args:
        feats1, feats2: encoder outputs of view 1 / view 2 for this replica's
            images, dicts with "r1" [b,1,1,D], "r5" [b,5,5,D], "r7" [b,7,7,D].
        loc1, loc2: [b] int, the random r5 location used as the 5->5 source.
        trg1, trg2: optional dicts with "r5" [B,25,D] and "r7" [B,49,D] target
            locations of the global batch (defaults: this replica's own).
        tclip, reg_coeff, pos_offset: see `infonce`.

    Returns:
        dict of float32 scalars "nce_1t5", "nce_1t7", "nce_5t5" (each averaged
        over both directions x1->x2 and x2->x1), "reg" (0.5 * the sum of the six
        per-direction penalties, as the official code) and "total" (their sum).
    """
    if trg1 is None:
        trg1 = {k: flatten_locations(feats1[k]) for k in ("r5", "r7")}
    if trg2 is None:
        trg2 = {k: flatten_locations(feats2[k]) for k in ("r5", "r7")}
    r1_1 = tf.reshape(feats1["r1"], [tf.shape(feats1["r1"])[0], -1])  # [b, D]
    r1_2 = tf.reshape(feats2["r1"], [tf.shape(feats2["r1"])[0], -1])  # [b, D]
    r5_1 = sample_locations(feats1["r5"], loc1)                        # [b, D]
    r5_2 = sample_locations(feats2["r5"], loc2)                        # [b, D]
    nce = lambda s, t: infonce(s, t, tclip, reg_coeff, pos_offset)
    pairs = {
        "nce_1t5": (nce(r1_1, trg2["r5"]), nce(r1_2, trg1["r5"])),
        "nce_1t7": (nce(r1_1, trg2["r7"]), nce(r1_2, trg1["r7"])),
        "nce_5t5": (nce(r5_1, trg2["r5"]), nce(r5_2, trg1["r5"])),
    }
    out = {name: 0.5 * (a[0] + b[0]) for name, (a, b) in pairs.items()}
    out["reg"] = 0.5 * tf.add_n([a[1] + b[1] for a, b in pairs.values()])
    out["total"] = out["nce_1t5"] + out["nce_1t7"] + out["nce_5t5"] + out["reg"]
    return out


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
    logits = tf.cast(logits, tf.float32)                               # [N, K]
    labels = tf.cast(labels, tf.int32)                                 # [N]
    valid = tf.cast(labels >= 0, tf.float32)                           # [N]
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.maximum(labels, 0), logits=tanh_clip(logits, clip))  # [N]
    n_valid = tf.maximum(tf.reduce_sum(valid), 1.0)
    reg = reg_coeff * tf.reduce_mean(tf.square(logits))
    return tf.reduce_sum(xent * valid) / n_valid + reg
