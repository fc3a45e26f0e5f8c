"""Few-label evaluation: `python tools/finetune.py --encoder=DIR --out=OUT --fractions=0.01,0.1`.

At class-balanced, seeded label subsets (a fraction of the train split, or
--per_class images of each class), compares three arms on the whole eval split:
the frozen encoder + logistic regression (tools/evaluate.py's protocol), the
pretrained encoder fine-tuned end to end with a new head, and the same network
trained from scratch on those labels. Writes OUT/finetune.{md,json,png}, the
fine-tuned classifier of the largest budget (OUT/classifier.keras) and its
SavedModel (OUT/export/1, signature `classify`: uint8 images -> probabilities,
class names). Transfer to other labelled data: --config.data.source=digits
(only --config.data.* keys; the encoder is the run's). --workdir is the older name of
--encoder. Each arm prints a line when it starts and when it ends, with an ETA.
"""

import os

from absl import flags, logging

from amdim_tf import cli, config_lib
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
    "epochs", _RECIPE.epochs, "Fine-tuning epochs over the labelled subset ..."
)
_MIN_STEPS = flags.DEFINE_integer(
    "min_steps", _RECIPE.min_steps, "... but at least this many steps ..."
)
_MAX_STEPS = flags.DEFINE_integer(
    "max_steps",
    _RECIPE.max_steps,
    "... and at most this many (~200 s per arm on a 2-core CPU at batch 64).",
)
_BATCH = flags.DEFINE_integer("batch_size", _RECIPE.batch_size, "Fine-tuning batch size.")
_HEAD_LR = flags.DEFINE_float("head_lr", _RECIPE.head_lr, "Adam learning rate of the new head.")
_BACKBONE_MULT = flags.DEFINE_float(
    "backbone_lr_multiplier",
    _RECIPE.backbone_lr_multiplier,
    "Encoder learning rate = head_lr * this (fine-tuning arm).",
)
_BN = flags.DEFINE_enum(
    "bn",
    _RECIPE.bn,
    list(finetune_lib.BN_MODES),
    "BatchNorm of the pretrained encoder while fine-tuning: frozen = inference mode with the "
    "pretraining statistics (common practice with few labels), train = batch statistics.",
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
    cli.check_flag("head_lr", _HEAD_LR.value, _HEAD_LR.value > 0, "a learning rate > 0")
    cli.check_flag(
        "backbone_lr_multiplier",
        _BACKBONE_MULT.value,
        _BACKBONE_MULT.value >= 0,
        "a number >= 0 (0 = a frozen encoder)",
    )
    return cli.parse_seeds(_SEEDS.value)


def _main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; every option is a --flag (see --help).")
    workdir = cli.encoder_path("a work directory written by amdim-train")
    seeds = _check_flags()
    overrides = cli.data_overrides()
    out = _OUT.value
    if not out:
        source = dict(map(config_lib.parse_override, overrides)).get("data.source")
        out = os.path.join(workdir, f"finetune_{source}" if source else "finetune")
    cli.check_writable_dir("out", out)

    def run():
        import tensorflow as tf

        # Each arm traces its own train step; TF's retracing advice is noise here.
        tf.get_logger().setLevel("ERROR")

        result = finetune_lib.run_few_label_evaluation(
            workdir,
            out,
            finetune_lib.parse_budgets(_FRACTIONS.value, _PER_CLASS.value),
            seeds=seeds,
            arms=tuple(_ARMS.value),
            recipe=finetune_lib.Recipe(
                epochs=_EPOCHS.value,
                min_steps=_MIN_STEPS.value,
                max_steps=_MAX_STEPS.value,
                batch_size=_BATCH.value,
                head_lr=_HEAD_LR.value,
                backbone_lr_multiplier=_BACKBONE_MULT.value,
                bn=_BN.value,
            ),
            which=_WHICH.value,
            data_overrides=overrides,
            max_test=_MAX_TEST.value,
        )
        print(result["table"])
        print("wrote " + ", ".join(result["paths"].values()))

    cli.run_main(run)


def main(argv: list[str] | None = None) -> None:
    """The `amdim-finetune` command (also `python -m amdim_tf.cli.finetune`, `python tools/finetune.py`)."""
    cli.run_command(_main, __name__, argv)


if __name__ == "__main__":
    main()
