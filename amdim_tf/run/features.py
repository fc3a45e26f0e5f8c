"""Features of a frozen encoder, pooled to vectors, and the kNN accuracy on them.

The one place that turns an encoder's feature maps into vectors (`pool`: r1
[B, 1, 1, D] flattened, r5 / r7 average-pooled over locations), encodes a dataset with
them (`extract_features`) and scores a cosine kNN (`knn_accuracy`, with the neighbours
and the vote of `run/neighbours.py`): the frozen evaluation, the online kNN monitor and
embedding all read their features through here, so they agree.
"""

import weakref

import numpy as np
import tensorflow as tf

from amdim_tf.errors import UserError
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run.neighbours import knn_votes, l2_normalise, topk_cosine

_FEATURE_FNS = weakref.WeakKeyDictionary()


def pool(out: dict, keys) -> dict:
    """{key: float32 [B, D]} of an encoder's output dict: each map averaged over locations.

    r1 is [B, 1, 1, D], so its mean is the flat vector; r5 / r7 are average-pooled."""
    return {k: tf.reduce_mean(tf.cast(out[k], tf.float32), axis=[1, 2]) for k in keys}


def check_feature_keys(keys, outputs, what: str) -> None:
    """ValueError unless `keys` are one or more of `outputs`, the feature maps `what` returns."""
    if not keys or any(k not in outputs for k in keys):
        raise UserError(
            f"features {','.join(keys)} are not all outputs of {what}: use one or more of "
            f"{','.join(outputs)} (those available)."
        )


def _feature_fn(encoder, keys):
    """One traced feature function per (encoder, keys), reused across calls."""
    fns = _FEATURE_FNS.setdefault(encoder, {})
    if keys not in fns:
        size = encoder.image_size

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def encode(images):
            pooled = pool(encoder(images, training=False), keys)
            return tf.concat([pooled[k] for k in keys], axis=1)  # [B, sum D]

        fns[keys] = encode
    return fns[keys]


def _collect(dataset, featurize, max_examples):
    """(features [N, D], labels int64 [N]) of a finite (images, labels) dataset."""
    feats, labels, n = [], [], 0
    for images, y in dataset:
        feats.append(featurize(images))
        labels.append(np.asarray(y))
        n += len(labels[-1])
        if max_examples and n >= max_examples:
            break
    feats, labels = np.concatenate(feats), np.concatenate(labels).astype(np.int64)
    if max_examples:
        feats, labels = feats[:max_examples], labels[:max_examples]
    return feats, labels


def extract_features(encoder, dataset, keys=(GLOBAL,), max_examples: int = None) -> tuple:
    """Encode a finite (images, labels) dataset with the frozen encoder.

    Args:
        encoder: maps normalised images to a dict of feature maps.
        dataset: yields (images [B,S,S,3], labels [B]).
        keys: feature maps to use, pooled by `pool` and concatenated.
        max_examples: stop after this many examples.

    Returns:
        (features float32 [N, D], labels int64 [N]).
    """
    encode = _feature_fn(encoder, tuple(keys))
    return _collect(dataset, lambda images: encode(images).numpy(), max_examples)


def pixel_features(dataset, max_examples: int = None) -> tuple:
    """Raw (normalised) pixels, flattened: the baseline any representation must beat."""

    def flat(images):
        x = np.asarray(images, np.float32)
        return x.reshape(len(x), -1)

    return _collect(dataset, flat, max_examples)


def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 20, batch: int = 1024) -> float:
    """Cosine kNN (L2-normalised features, majority vote among the k nearest train examples;
    ties go to the lowest class index)."""
    k = min(k, len(train_x))
    train_n, test_n = l2_normalise(train_x), l2_normalise(test_x)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    rows, _ = topk_cosine(test_n, train_n, k, block=batch)  # [M, k]
    votes = knn_votes(np.asarray(train_y)[rows], n_classes)  # [M, C]
    return int(np.sum(votes.argmax(1) == test_y)) / len(test_n)
