"""Frozen-encoder evaluation: a linear classifier and cosine kNN on cached features.

The standard self-supervised protocol: encode labelled images with the frozen
encoder (BatchNorm in inference mode, no augmentation), then fit a linear
classifier on the train features and score the test features. We use
scikit-learn's logistic regression on standardised features (the protocol of
the official-AMDIM reference runs this project compares against) and a
cosine-similarity kNN with a majority vote (k=20 or 200 as in common SSL
practice, e.g. Wu et al. 2018 use 200 with weighted votes).
"""

import warnings
import weakref

import numpy as np
import tensorflow as tf

from amdim_tf import data as data_lib
from amdim_tf.methods.features import GLOBAL

_FEATURE_FNS = weakref.WeakKeyDictionary()


def _feature_fn(encoder, keys):
    """One traced feature function per (encoder, keys), reused across calls."""
    fns = _FEATURE_FNS.setdefault(encoder, {})
    if keys not in fns:
        size = encoder.image_size

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def encode(images):
            out = encoder(images, training=False)
            # r1 is [B,1,1,D]: its mean is the flat vector; r5/r7 are average-pooled.
            parts = [tf.reduce_mean(tf.cast(out[k], tf.float32), axis=[1, 2]) for k in keys]
            return tf.concat(parts, axis=1)  # [B, sum D]

        fns[keys] = encode
    return fns[keys]


def check_feature_keys(keys, outputs, what):
    """ValueError unless `keys` are one or more of `outputs`, the feature maps `what` returns."""
    if not keys or any(k not in outputs for k in keys):
        raise ValueError(
            f"features {','.join(keys)} are not all outputs of {what}: use one or more of "
            f"{','.join(outputs)} (those available)."
        )


def extract_features(encoder, dataset, keys=(GLOBAL,), max_examples=None):
    """Encode a finite (images, labels) dataset with the frozen encoder.

    Args:
        encoder: maps images to a dict of feature maps.
        dataset: yields (images [B,S,S,3], labels [B]).
        keys: feature maps to use; r1 is flattened, r5/r7 are average-pooled
            over locations, and the results are concatenated.
        max_examples: stop after this many examples.

    Returns:
        (features float32 [N, D], labels int64 [N]).
    """
    encode = _feature_fn(encoder, tuple(keys))
    return _collect(dataset, lambda images: encode(images).numpy(), max_examples)


def pixel_features(dataset, max_examples=None):
    """Raw (normalised) pixels, flattened: the baseline any representation must beat."""

    def flat(images):
        x = np.asarray(images, np.float32)
        return x.reshape(len(x), -1)

    return _collect(dataset, flat, max_examples)


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


def linear_accuracy(train_x, train_y, test_x, test_y, max_iter=300, seed=0):
    """Test accuracy of a logistic regression fitted on standardised train features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        # Not converging in max_iter is part of the fixed protocol, not an error.
        warnings.simplefilter("ignore")
        clf.fit(train_x, train_y)
    return float(np.mean(clf.predict(test_x) == test_y))


def l2_normalise(x):
    """Rows of `x` scaled to unit length (float32), so dot products are cosines."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_accuracy(train_x, train_y, test_x, test_y, k=20, batch=1024):
    """Cosine kNN (L2-normalised features, majority vote among the k nearest train examples)."""
    k = min(k, len(train_x))
    train_n, test_n = l2_normalise(train_x), l2_normalise(test_x)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for i in range(0, len(test_n), batch):
        sims = test_n[i : i + batch] @ train_n.T  # [b, N]
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # [b, k]
        votes = np.zeros((len(sims), n_classes))
        np.add.at(votes, (np.arange(len(sims))[:, None], train_y[nearest]), 1)
        # Ties go to the lowest class index, deterministically.
        correct += int(np.sum(votes.argmax(1) == test_y[i : i + batch]))
    return correct / len(test_n)


def evaluate_features(train, test, k=20, max_iter=300):
    """{"linear_acc", "knn_acc"} for ((train_x, train_y), (test_x, test_y))."""
    (trx, try_), (tex, tey) = train, test
    return {
        "linear_acc": linear_accuracy(trx, try_, tex, tey, max_iter),
        "knn_acc": knn_accuracy(trx, try_, tex, tey, k),
    }


def evaluate_encoders(
    config,
    encoders,
    pixels=True,
    max_train=10000,
    k=20,
    max_iter=300,
    batch_size=256,
    features=(GLOBAL,),
):
    """The frozen protocol on the labelled data of `config.data`, for several encoders.

    Args:
        config: run config (its `data` section says which data).
        encoders: dict name -> encoder (e.g. {"AMDIM": trained, "untrained": fresh}).
        pixels: also evaluate raw pixels (the floor every representation must beat).
        max_train: train examples used to fit the classifiers (a seeded uniform
            sample of the train split; 0 = all of it); all eval-split examples are scored.
        features: the encoder outputs to classify (see `extract_features`), any of
            each encoder's `feature_shapes`: r1 alone is the paper's protocol;
            ("r1", "r5") adds AMDIM's pooled 5x5 map.

    Returns:
        list of dicts {"model", "features", "linear_acc", "knn_acc", "n_train", "n_test"}.
    """
    for name, enc in encoders.items():
        check_feature_keys(features, tuple(enc.feature_shapes), f"{name} ({type(enc).__name__})")
    train_split = config.data.train_split
    source = data_lib.open_source(config.data)  # opened once: one scan for both splits
    train_ds = data_lib.make_eval_dataset(
        source, train_split, batch_size, max_examples=max_train, sample_seed=0
    )
    test_ds = data_lib.make_eval_dataset(source, config.data.eval_split, batch_size)
    rows = []
    if pixels:
        train, test = pixel_features(train_ds), pixel_features(test_ds)
        row = {"model": "raw pixels", "features": "pixels"}
        rows.append({**row, **evaluate_features(train, test, k, max_iter)})
    for name, enc in encoders.items():
        train = extract_features(enc, train_ds, features)
        test = extract_features(enc, test_ds, features)
        row = {"model": name, "features": "+".join(features)}
        rows.append({**row, **evaluate_features(train, test, k, max_iter)})
    for r in rows:
        r.update(n_train=len(train[1]), n_test=len(test[1]))
    return rows


def format_table(rows, k=20):
    lines = [f"| model | linear (logistic regression) | kNN (cosine, k={k}) |", "|---|---|---|"]
    for r in rows:
        name = r["model"]
        if r.get("features", GLOBAL) not in (GLOBAL, "pixels"):
            name += f", {r['features']}"
        lines.append(f"| {name} | {100 * r['linear_acc']:.1f}% | {100 * r['knn_acc']:.1f}% |")
    return "\n".join(lines)
