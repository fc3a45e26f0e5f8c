"""Frozen-encoder evaluation of a training run: linear (logistic regression) and kNN accuracy.

    amdim-evaluate --encoder=DIR [--which=latest|best] [--baselines]
        [--max_train=0] [--features=r1,r5] [--out=DIR]

Fits the classifiers on up to --max_train frozen features (r1 by default) of the
labelled train split and scores every example of the eval split; prints a table and
writes OUT/eval.json (OUT defaults to the work directory; --workdir is the older name
of --encoder). --baselines adds raw pixels and an untrained encoder of the same shape.
"""

import inspect

from absl import flags

from amdim_tf import cli
from amdim_tf.use import evaluate

# The library's defaults are the flags' defaults (one place to change them).
_DEFAULTS = inspect.signature(evaluate.evaluate_encoders).parameters

cli.define_encoder_flags(__name__, "The encoder: a work directory written by amdim-train.")
_OUT = flags.DEFINE_string("out", None, "Directory of eval.json (default: the work directory).")
_WHICH = flags.DEFINE_enum(
    "which",
    "latest",
    ["latest", "best"],
    "Evaluate the latest checkpoint or the one with the best eval probe accuracy.",
)
_BASELINES = flags.DEFINE_bool(
    "baselines", False, "Also evaluate raw pixels and an untrained encoder of the same shape."
)
_MAX_TRAIN = flags.DEFINE_integer(
    "max_train",
    _DEFAULTS["max_train"].default,
    "Train examples used to fit the classifiers (a seeded sample; 0 = the whole train "
    "split, the usual protocol of papers; 10,000 is quicker).",
)
_FEATURES = flags.DEFINE_list(
    "features",
    ["r1"],
    "Encoder outputs to classify, concatenated and average-pooled over locations: r1 "
    "(the global vector, the paper's protocol), AMDIM's r5 and r7, or any other output "
    "of the run's encoder (an unknown name lists them).",
)
_K = flags.DEFINE_integer(
    "k",
    _DEFAULTS["k"].default,
    "Neighbours of the cosine kNN (20 or 200 are common in SSL papers).",
)
cli.define_data_overrides(
    __name__,
    "Labelled data to evaluate on instead of the run's (transfer; repeatable): any key "
    "of config.data, e.g. --config.data.source=digits.",
)


def _run():
    if _MAX_TRAIN.value < 0:
        cli.fail(f"--max_train={_MAX_TRAIN.value}: use a positive count, or 0 for all.")
    cli.check_flag("k", _K.value, _K.value >= 1, "an integer >= 1 (20 or 200 are common)")
    workdir = cli.encoder_path("a work directory written by amdim-train")
    out_dir = _OUT.value or workdir
    # Checked before the work: evaluation takes minutes, then writes eval.json.
    cli.check_writable_dir("out", out_dir)

    rows, out = evaluate.evaluate_run(
        workdir,
        out_dir,
        which=_WHICH.value,
        baselines=_BASELINES.value,
        data_overrides=cli.data_overrides(),
        max_train=_MAX_TRAIN.value,
        k=_K.value,
        features=_FEATURES.value,
        verbose=1,
    )
    print(evaluate.format_table(rows, _K.value))
    print(f"wrote {out}")


main = cli.command(__name__, _run)


if __name__ == "__main__":
    main()
