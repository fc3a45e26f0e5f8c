"""Score maps and mixture assignments of a trained run (AMDIM §3.7), as PNG files.

    amdim-visualize --encoder=DIR [--n=16] [--out=DIR/viz]
        [--config.data.source=folder --config.data.path=IMAGES]

Writes OUT/<checkpoint>_score_maps.png (two augmented views beside the NCE score of
view 1's r1 at each r7 and r5 location of view 2) and, for a run with
config.model.n_mix > 0, OUT/<checkpoint>_assignments.png (each r7 location coloured by
the mixture component that q assigns it to). Images: a class-balanced sample of the
run's eval split (--split; --config.data.path=PATH points at a moved data file), or the
first --n files of a flat folder (--config.data.source=folder --config.data.path=DIR).
Scores rank each image against the others shown, so use at least 8. --workdir is the
older name of --encoder; --folder and --data_path the older forms of the data flags.
"""

import os

from absl import flags

from amdim_tf import cli

cli.define_encoder_flags(
    __name__,
    "The run to draw: a work directory written by amdim-train (its encoder and objective).",
)
_WHICH = flags.DEFINE_enum(
    "which", "latest", ["latest", "best"], "The latest checkpoint or the best one."
)
_N = flags.DEFINE_integer("n", 16, "Images to draw (>= 2: the others are the negatives).")
_FOLDER = flags.DEFINE_string(
    "folder", "", "Same as --config.data.source=folder --config.data.path=DIR (older form)."
)
_SPLIT = flags.DEFINE_string("split", "", "Split of the run's data ('' = its eval split).")
_DATA_PATH = flags.DEFINE_string("data_path", "", "Same as --config.data.path=PATH (older form).")
cli.define_data_overrides(
    __name__,
    "Data to draw instead of the run's (repeatable): any key of config.data, e.g. "
    "--config.data.path=PATH.",
)
_OUT = flags.DEFINE_string("out", "", "Output directory ('' = ENCODER/viz).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the image sample and the augmented views.")


def _run():
    workdir = cli.encoder_path("a work directory written by amdim-train")
    cli.check_flag("n", _N.value, _N.value >= 2, "an integer >= 2 (the others are the negatives)")
    cli.check_writable_dir("out", _OUT.value or os.path.join(workdir, "viz"))

    from amdim_tf.use import visualize

    overrides = cli.data_overrides()
    if _DATA_PATH.value:
        overrides.append(f"data.path={_DATA_PATH.value}")
    paths = visualize.visualize_run(
        workdir,
        out_dir=_OUT.value,
        which=_WHICH.value,
        n=_N.value,
        folder=_FOLDER.value,
        split=_SPLIT.value,
        seed=_SEED.value,
        overrides=overrides,
    )
    for path in paths:
        print(f"wrote {path}")


main = cli.command(__name__, _run)


if __name__ == "__main__":
    main()
