"""Frozen-encoder evaluation: a linear classifier and cosine kNN on cached features.

The standard self-supervised protocol: encode labelled images with the frozen
encoder (BatchNorm in inference mode, no augmentation), then fit a linear
classifier on the train features and score the test features. We use
scikit-learn's logistic regression on standardised features (the protocol of
the official-AMDIM reference runs this project compares against) and a
cosine-similarity kNN with a majority vote (k=20 or 200 as in common SSL
practice, e.g. Wu et al. 2018 use 200 with weighted votes).
"""

import os
import warnings

import numpy as np

from amdim_tf import data as data_lib
from amdim_tf import durable
from amdim_tf.errors import UserError
from amdim_tf.methods.features import GLOBAL

# The feature maths is shared with the kNN monitor and embed (run/features.py).
from amdim_tf.run.features import (
    check_feature_keys,
    extract_features,
    knn_accuracy,
    pixel_features,
)
from amdim_tf.use.progress import Progress


def fit_linear(train_x, train_y, max_iter=300, seed=0):
    """The frozen protocol's classifier: a scikit-learn pipeline of a StandardScaler and a
    logistic regression, fitted on (train_x [N, D], train_y [N])."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        # Not converging in max_iter is part of the fixed protocol, not an error.
        warnings.simplefilter("ignore")
        clf.fit(train_x, train_y)
    return clf


def linear_accuracy(train_x, train_y, test_x, test_y, max_iter=300, seed=0):
    """Test accuracy of a logistic regression fitted on standardised train features."""
    clf = fit_linear(train_x, train_y, max_iter, seed)
    return float(np.mean(clf.predict(test_x) == test_y))


def linear_weights(clf, num_classes: int) -> tuple:
    """(kernel float32 [D, K], bias float32 [K]) of a `fit_linear` pipeline folded into one
    affine map, so that features @ kernel + bias are its decision values (logits: the
    softmax of them is its predict_proba). A two-class fit has one decision column z;
    its logits are [0, z]. Every class 0..K-1 must have been seen in the fit."""
    scaler, logistic = clf[0], clf[-1]
    if list(logistic.classes_) != list(range(num_classes)):
        raise UserError(
            f"the linear probe saw classes {list(logistic.classes_)}, not 0..{num_classes - 1}."
        )
    coef, intercept = logistic.coef_, logistic.intercept_  # [K or 1, D], [K or 1]
    if num_classes == 2:
        coef = np.concatenate([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    # ((x - mean) / scale) @ coef.T + b  ==  x @ (coef / scale).T + (b - coef @ (mean / scale))
    kernel = (coef / scaler.scale_).T
    bias = intercept - coef @ (scaler.mean_ / scaler.scale_)
    return kernel.astype(np.float32), bias.astype(np.float32)


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
    verbose=0,
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
        verbose: 1 prints a line as each model starts and ends, with an ETA.

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
    # Raw pixels take seconds, an encoder longer: each kind's ETA is its own.
    kinds = ["raw-pixel model"] * bool(pixels) + ["encoder"] * len(encoders)
    progress = Progress(len(kinds), enabled=bool(verbose), kinds=kinds)

    def scored(row, train, test):
        result = {**row, **evaluate_features(train, test, k, max_iter)}
        progress.done(
            f"linear {100 * result['linear_acc']:.1f}%, kNN {100 * result['knn_acc']:.1f}%"
        )
        return result

    if pixels:
        progress.start("raw pixels")
        train, test = pixel_features(train_ds), pixel_features(test_ds)
        rows.append(scored({"model": "raw pixels", "features": "pixels"}, train, test))
    for name, enc in encoders.items():
        progress.start(name)
        train = extract_features(enc, train_ds, features)
        test = extract_features(enc, test_ds, features)
        rows.append(scored({"model": name, "features": "+".join(features)}, train, test))
    for r in rows:
        r.update(n_train=len(train[1]), n_test=len(test[1]))
    return rows


def evaluate_run(
    workdir,
    out_dir=None,
    which="latest",
    baselines=False,
    data_overrides=(),
    max_train=10000,
    k=20,
    features=(GLOBAL,),
    verbose=0,
) -> tuple[list, str]:
    """The frozen protocol on a training run's encoder (amdim-evaluate), written to
    OUT_DIR/eval.json (OUT_DIR defaults to the work directory).

    Args:
        workdir: a work directory written by amdim-train.
        which: its "latest" or "best" checkpoint.
        baselines: also evaluate raw pixels and an untrained encoder of the same shape.
        data_overrides: "data.KEY=VALUE" items: other labelled data (transfer).
        max_train, k, features, verbose: as for `evaluate_encoders`.

    Returns:
        (the rows of `evaluate_encoders`, the path of eval.json).
    """
    from amdim_tf import config_lib
    from amdim_tf.run import loader
    from amdim_tf.run.run_config import load_run_config

    config = config_lib.with_data_overrides(load_run_config(workdir), list(data_overrides))
    trained = loader.open_encoder(workdir, which)
    encoders = {f"trained ({trained.source})": trained.encoder}
    if baselines:
        encoders["untrained, same shape"] = loader.untrained_encoder(config)
    rows = evaluate_encoders(
        config,
        encoders,
        pixels=baselines,
        max_train=max_train,
        k=k,
        features=tuple(features),
        verbose=verbose,
    )
    out_dir = out_dir or workdir
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "eval.json")
    durable.write_json(out, {"which": which, "k": k, "rows": rows}, indent=1, sort_keys=False)
    return rows, out


def format_table(rows, k=20):
    lines = [f"| model | linear (logistic regression) | kNN (cosine, k={k}) |", "|---|---|---|"]
    for r in rows:
        name = r["model"]
        if r.get("features", GLOBAL) not in (GLOBAL, "pixels"):
            name += f", {r['features']}"
        lines.append(f"| {name} | {100 * r['linear_acc']:.1f}% | {100 * r['knn_acc']:.1f}% |")
    return "\n".join(lines)
