"""The main job, offline: pretrain AMDIM on scikit-learn's digits, evaluate, export.

    amdim-demo [--workdir=runs/demo] [--config=amdim_digits_demo]
        [--format=savedmodel,litert,litert_int8w,onnx]

Pretrains for a few minutes on CPU, then runs the frozen-encoder evaluation of raw
pixels, an untrained encoder of the same shape and the AMDIM-trained encoder
(logistic regression and cosine kNN on the digits test split), prints one table,
and exports the encoder as a SavedModel. Re-running resumes/reuses the workdir.
"""

from absl import flags
from ml_collections import config_flags

from amdim_tf import cli, presets

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    presets.resolve("amdim_digits_demo"),
    "Run configuration (default: the offline digits demo).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the run, its logs and the export go.")
_FORMAT = flags.DEFINE_string(
    "format",
    "savedmodel",
    "Export formats: savedmodel, plus any of litert, litert_int8, litert_int8w, onnx "
    "(checked against the SavedModel; pip install 'amdim-tf[edge]').",
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", True, "Replace a previous demo run with a different config in --workdir."
)


def _run():
    cli.check_name_lengths("workdir", _WORKDIR.value)
    from amdim_tf.use import demo, edge

    formats = edge.parse_formats(_FORMAT.value)
    config = cli.load_config_flag(_CONFIG)
    summary = demo.run_demo(config, _WORKDIR.value, formats, overwrite=_OVERWRITE.value)
    print(
        f"\npretraining {summary['train_seconds']:.0f} s ({summary['start']}); "
        f"total {summary['total_seconds']:.0f} s"
    )
    print(f"TensorBoard: tensorboard --logdir {_WORKDIR.value}")
    # The SavedModel resizes: any image size works, not only the encoder's.
    print(f"SavedModel: {summary['export']} (serving_default takes uint8 images [B, H, W, 3])")


main = cli.command(__name__, _run)


if __name__ == "__main__":
    main()
