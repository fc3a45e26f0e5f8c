"""Few-label evaluation: `amdim-finetune --encoder=DIR --out=OUT --fractions=0.01,0.1`.

At class-balanced, seeded label subsets (a fraction of the train split, or
--per_class images of each class), compares three arms on the whole eval split:
the frozen encoder + logistic regression (amdim-evaluate's protocol), the
pretrained encoder fine-tuned end to end from that linear probe (candidates and early
stopping chosen on held-out labels, --val_fraction), and the same network trained from
scratch on those labels with the same selection. Writes OUT/finetune.{md,json,png}, the
classifier of the arm best on the held-out labels of the largest budget, scratch
included (OUT/classifier.keras; the report names it, its margin and the noise), and its
SavedModel (OUT/export/1, signature `classify`: uint8 images -> probabilities,
class names). Transfer to other labelled data: --config.data.source=digits
(only --config.data.* keys; the encoder is the run's). --workdir is the older name of
--encoder. Each arm prints a line when it starts and when it ends, with an ETA.
"""

import os

from absl import flags

from amdim_tf import cli, config_lib
from amdim_tf.errors import UserError
from amdim_tf.use import finetune as finetune_lib

# The library's recipe defaults are the flags' defaults (one place to change them).
_RECIPE = finetune_lib.Recipe()

cli.define_encoder_flags(
    __name__,
    "The encoder: a work directory written by amdim-train; its run is not changed (the "
    "outputs go to --out).",
)
_OUT = flags.DEFINE_string(
    "out", None, "Output directory (default ENCODER/finetune, or ENCODER/finetune_<source>)."
)
_WHICH = flags.DEFINE_enum("which", "latest", ["latest", "best"], "Checkpoint of the run.")
_FRACTIONS = flags.DEFINE_list(
    "fractions",
    [],
    "Label budgets as fractions of the train split (0.01 = 1% = 500 CIFAR-10 images).",
)
_PER_CLASS = flags.DEFINE_list("per_class", [], "Label budgets as images per class, e.g. 50.")
_SEEDS = flags.DEFINE_list(
    "seeds", ["1"], "Seeds of the label subsets and of training; the table shows their spread."
)
_ARMS = flags.DEFINE_list("arms", ["frozen", "finetune", "scratch"], "Arms to run.")
_EPOCHS = flags.DEFINE_integer(
    "epochs", _RECIPE.epochs, "Training epochs over the labelled subset's training part ..."
)
_MIN_STEPS = flags.DEFINE_integer(
    "min_steps", _RECIPE.min_steps, "... but at least this many steps (0 = no floor) ..."
)
_MAX_STEPS = flags.DEFINE_integer(
    "max_steps",
    _RECIPE.max_steps,
    "... and at most this many, below --min_steps too (0 = no cap: the budget grows with "
    "the labels; ~0.3 s a step of batch 64 for the parity encoder on a 2-core CPU).",
)
_BATCH = flags.DEFINE_integer("batch_size", _RECIPE.batch_size, "Fine-tuning batch size.")
_HEAD_LR = flags.DEFINE_float("head_lr", _RECIPE.head_lr, "Adam learning rate of the new head.")
_CANDIDATES = flags.DEFINE_list(
    "candidates",
    [f"{bn}:{m:g}" for bn, m in _RECIPE.candidates],
    "Fine-tuning candidates as BN:MULTIPLIER, each run from the linear probe and scored on "
    "the held-out labels; BN frozen = inference mode with the pretraining statistics, train "
    "= batch statistics adapted to the data; the encoder's learning rate = head_lr * "
    "MULTIPLIER (0 = a frozen encoder).",
)
_VAL_FRACTION = flags.DEFINE_float(
    "val_fraction",
    _RECIPE.val_fraction,
    "Fraction of each class's labels held out to select the candidate and step (never "
    "the test split).",
)
_EVALS = flags.DEFINE_integer(
    "evals", _RECIPE.evals, "Held-out checks per training run (early stopping)."
)
_MAX_TEST = flags.DEFINE_integer("max_test", 0, "Score a sample of the eval split (0 = all).")
cli.define_data_overrides(
    __name__,
    "Labelled data to evaluate on instead of the run's (transfer; repeatable): any key "
    "of config.data, e.g. --config.data.source=digits.",
)


def _check_flags():
    """Values that cannot work, refused in one line before any arm runs."""
    for flag in (_EPOCHS, _BATCH):
        cli.check_flag(flag.name, flag.value, flag.value >= 1, "an integer >= 1")
    for flag in (_MIN_STEPS, _MAX_STEPS, _MAX_TEST):
        cli.check_flag(flag.name, flag.value, flag.value >= 0, "an integer >= 0")
    cli.check_positive_finite("head_lr", _HEAD_LR.value, "a learning rate")
    cli.check_flag("evals", _EVALS.value, _EVALS.value >= 1, "an integer >= 1")
    cli.check_flag(
        "val_fraction", _VAL_FRACTION.value, 0 < _VAL_FRACTION.value < 1, "a fraction in (0, 1)"
    )
    return cli.parse_seeds(_SEEDS.value)


def _candidates() -> tuple:
    """--candidates as (BN, multiplier) pairs; a one-line error naming the flag otherwise."""
    shown = ",".join(_CANDIDATES.value)
    try:
        candidates = finetune_lib.parse_candidates(_CANDIDATES.value)
        finetune_lib.Recipe(candidates=candidates)  # its check of each candidate
    except UserError as e:
        cli.fail(f"--candidates={shown} is not allowed: {e}")
    return candidates


def _recipe():
    # Every flag was checked by name above; --max_steps alone caps the budget, even
    # below --min_steps (a cap is what a user with a CPU budget asks for).
    return finetune_lib.Recipe(
        epochs=_EPOCHS.value,
        min_steps=_MIN_STEPS.value,
        max_steps=_MAX_STEPS.value,
        batch_size=_BATCH.value,
        head_lr=_HEAD_LR.value,
        candidates=_candidates(),
        val_fraction=_VAL_FRACTION.value,
        evals=_EVALS.value,
    )


def _run():
    workdir = cli.encoder_path("a work directory written by amdim-train")
    seeds = _check_flags()
    recipe = _recipe()
    overrides = cli.data_overrides()
    out = _OUT.value
    if not out:
        source = dict(map(config_lib.parse_override, overrides)).get("data.source")
        out = os.path.join(workdir, f"finetune_{source}" if source else "finetune")
    cli.check_writable_dir("out", out)

    import tensorflow as tf

    # Each arm traces its own train step; TF's retracing advice is noise here.
    tf.get_logger().setLevel("ERROR")

    result = finetune_lib.run_few_label_evaluation(
        workdir,
        out,
        finetune_lib.parse_budgets(_FRACTIONS.value, _PER_CLASS.value),
        seeds=seeds,
        arms=tuple(_ARMS.value),
        recipe=recipe,
        which=_WHICH.value,
        data_overrides=overrides,
        max_test=_MAX_TEST.value,
    )
    print(result["table"])
    print("wrote " + ", ".join(result["paths"].values()))


main = cli.command(__name__, _run)


if __name__ == "__main__":
    main()
