"""Frozen-encoder evaluation of a training run: linear (logistic regression) and kNN accuracy.

    python tools/evaluate.py --encoder=DIR [--which=latest|best] [--baselines]
        [--max_train=0] [--features=r1,r5] [--out=DIR]

Fits the classifiers on up to --max_train frozen features (r1 by default) of the
labelled train split and scores every example of the eval split; prints a table and
writes OUT/eval.json (OUT defaults to the work directory; --workdir is the older name
of --encoder). --baselines adds raw pixels and an untrained encoder of the same shape.
"""

import inspect
import os

from absl import flags, logging

from amdim_tf import cli, config_lib, durable
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


def _main(argv):
    logging.set_verbosity(logging.WARNING)  # TF's INFO chatter hides the progress bar
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; every option is a --flag (see --help).")

    if _MAX_TRAIN.value < 0:
        cli.fail(f"--max_train={_MAX_TRAIN.value}: use a positive count, or 0 for all.")
    cli.check_flag("k", _K.value, _K.value >= 1, "an integer >= 1 (20 or 200 are common)")
    workdir = cli.encoder_path("a work directory written by amdim-train")
    out_dir = _OUT.value or workdir
    # Checked before the work: evaluation takes minutes, then writes eval.json.
    cli.check_writable_dir("out", out_dir)

    def run():
        from amdim_tf.run import loader
        from amdim_tf.run.run_config import load_run_config

        config = config_lib.with_data_overrides(load_run_config(workdir), cli.data_overrides())
        trained = loader.open_encoder(workdir, _WHICH.value)
        encoders = {f"trained ({trained.source})": trained.encoder}
        if _BASELINES.value:
            encoders["untrained, same shape"] = loader.untrained_encoder(config)
        rows = evaluate.evaluate_encoders(
            config,
            encoders,
            pixels=_BASELINES.value,
            max_train=_MAX_TRAIN.value,
            k=_K.value,
            features=tuple(_FEATURES.value),
            verbose=1,
        )
        print(evaluate.format_table(rows, _K.value))
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, "eval.json")
        durable.write_json(
            out, {"which": _WHICH.value, "k": _K.value, "rows": rows}, indent=1, sort_keys=False
        )
        print(f"wrote {out}")

    cli.run_main(run)


def main(argv: list[str] | None = None) -> None:
    """The `amdim-evaluate` command (also `python -m amdim_tf.cli.evaluate`, `python tools/evaluate.py`)."""
    cli.run_command(_main, __name__, argv)


if __name__ == "__main__":
    main()
