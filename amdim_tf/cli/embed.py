"""Embeds images with a trained encoder: features (.npy), index, TensorBoard projector, neighbours.

    amdim-embed --encoder=runs/c10 --out=runs/c10/embed          # the run's eval split
    amdim-embed --encoder=runs/c10/export --out=emb \\
        --config.data.source=folder --config.data.path=my_photos           # unlabelled photos
    amdim-embed --encoder=encoder.keras --out=emb --split=test \\
        --config.data.source=npz --config.data.path=../shared/data/cifar10/cifar10-jpeg.npz
    tensorboard --logdir emb                                                # tab PROJECTOR

--encoder takes a work directory (its latest or --which=best checkpoint), a SavedModel
export of amdim-export, or a .keras file (--save_keras writes one). The data come from
the run's config.json for a work directory (else the defaults), with any
--config.data.* override on top: every source the trainer reads (folder with class
sub-directories, or flat: unlabelled; npz; tfrecord; tfds). Writes OUT/r1.npy (N x D),
OUT/index.tsv (id, label, class; one line per row), OUT/neighbours.png, OUT/embed.json and
the projector files (amdim_tf/use/embed.py).
"""

import os

from absl import flags

from amdim_tf import cli, config_lib

cli.define_data_overrides(
    __name__,
    "Data to embed instead of the run's (repeatable): any key of config.data, e.g. "
    "--config.data.source=folder --config.data.path=DIR.",
)
cli.define_encoder_flags(
    __name__, "The encoder: a work directory, a SavedModel export (amdim-export) or a .keras file."
)
_OUT = flags.DEFINE_string(
    "out",
    None,
    "Directory to write the embedding to; a previous embedding there is replaced whole "
    "once the new one is complete.",
)
_SPLIT = flags.DEFINE_string(
    "split", None, "Split to embed, e.g. test, train, train+unlabeled (default data.eval_split)."
)
_FEATURES = flags.DEFINE_list(
    "features", ["r1"], "Encoder outputs to write (r1; r5 and r7 are average-pooled)."
)
_WHICH = flags.DEFINE_enum("which", "latest", ["latest", "best"], "Checkpoint of a work directory.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Images per encoder call.")
_NEIGHBOURS = flags.DEFINE_integer("neighbours", 8, "Nearest neighbours shown per query.")
_QUERIES = flags.DEFINE_integer("queries", 8, "Query rows of neighbours.png (0 = none).")
_PROJECTOR = flags.DEFINE_integer(
    "projector_examples", 10000, "Rows in the TensorBoard projector (0 = no projector)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Picks the queries and the projector sample.")
_SAVE_KERAS = flags.DEFINE_string(
    "save_keras",
    None,
    "Also write the encoder (with its normalisation) to this .keras file, for "
    "amdim_tf.load_encoder / keras.saving.load_model.",
)
flags.mark_flags_as_required(["out"])


def _check_flags():
    """Every value that cannot work, refused in one line before the encoder is loaded."""
    cli.check_flag("batch_size", _BATCH.value, _BATCH.value >= 1, "an integer >= 1")
    for flag in (_NEIGHBOURS, _QUERIES, _PROJECTOR):
        cli.check_flag(flag.name, flag.value, flag.value >= 0, "an integer >= 0 (0 = none)")
    cli.check_writable_dir("out", _OUT.value)
    keras_file = _SAVE_KERAS.value
    if keras_file:
        cli.check_flag(
            "save_keras", keras_file, keras_file.endswith(".keras"), "a path ending in .keras"
        )
        cli.check_flag(
            "save_keras",
            keras_file,
            not os.path.lexists(keras_file),
            "a new file (it exists: remove it or pick another name)",
        )
        cli.check_writable_dir("save_keras", os.path.dirname(os.path.abspath(keras_file)))


def _run():
    encoder = cli.encoder_path()
    _check_flags()

    from amdim_tf.run import loader
    from amdim_tf.run.run_config import load_run_config
    from amdim_tf.run.workdir import CONFIG_FILE
    from amdim_tf.use import embed

    if os.path.exists(os.path.join(encoder, CONFIG_FILE)):
        config, what = load_run_config(encoder), "the run's config"
    else:
        config, what = config_lib.base_config(), "the default config"
    data = config_lib.apply_overrides(
        config, cli.data_overrides(), allowed_prefixes=("data.",), what=what
    ).data
    summary = embed.embed(
        encoder,
        data,
        _SPLIT.value or data.eval_split,
        _OUT.value,
        features=_FEATURES.value,
        which=_WHICH.value,
        batch_size=_BATCH.value,
        neighbours=_NEIGHBOURS.value,
        queries=_QUERIES.value,
        projector_examples=_PROJECTOR.value,
        seed=_SEED.value,
    )
    skipped = summary["skipped_unreadable"]
    print(
        f"embedded {summary['images']:,} images of split {summary['split']!r} with "
        f"{summary['encoder']} in {summary['embed_seconds']:.1f} s "
        f"({summary['images_per_second']:.0f} images/s); skipped {skipped} unreadable"
        + (f" (first: {', '.join(summary['skipped_first'])})" if skipped else "")
    )
    if summary["non_finite_rows"]:
        print(
            f"{summary['non_finite_rows']} images have NaN or inf features (first: "
            f"{', '.join(summary['non_finite_ids'][:5])}): kept, named in embed.json, "
            "skipped by search and inspect"
        )
    print(f"wrote {', '.join(summary['outputs'])} to {_OUT.value}")
    if _PROJECTOR.value:
        print(f"view: tensorboard --logdir {_OUT.value}  (tab PROJECTOR)")
    if _SAVE_KERAS.value:
        loader.save_encoder(encoder, _SAVE_KERAS.value, which=_WHICH.value)
        print(f"wrote {_SAVE_KERAS.value}: amdim_tf.load_encoder({_SAVE_KERAS.value!r})")


main = cli.command(__name__, _run)


if __name__ == "__main__":
    main()
