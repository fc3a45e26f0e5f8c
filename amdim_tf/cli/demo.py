"""The main job, offline: pretrain AMDIM on scikit-learn's digits, evaluate, export.

    python tools/demo.py [--workdir=runs/demo] [--config=amdim_digits_demo]
        [--format=savedmodel,litert,litert_int8w,onnx]

Pretrains for a few minutes on CPU, then runs the frozen-encoder evaluation of raw
pixels, an untrained encoder of the same shape and the AMDIM-trained encoder
(logistic regression and cosine kNN on the digits test split), prints one table,
and exports the encoder as a SavedModel. Re-running resumes/reuses the workdir.
"""

import json
import os
import time

from absl import flags, logging
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


def _main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; every option is a --flag (see --help).")

    cli.check_name_lengths("workdir", _WORKDIR.value)

    def run():
        from amdim_tf.data import augment
        from amdim_tf.run.loader import untrained_encoder
        from amdim_tf.run.train import train
        from amdim_tf.use import edge, evaluate
        from amdim_tf.use.export import export_encoder

        formats = edge.parse_formats(_FORMAT.value)
        config = cli.load_config_flag(_CONFIG)
        workdir = _WORKDIR.value
        t0 = time.time()
        model, result = train(config, workdir, overwrite=_OVERWRITE.value)
        train_s = time.time() - t0
        encoders = {
            "AMDIM-trained encoder": model.encoder,
            "untrained encoder, same shape": untrained_encoder(config, seed=config.seed + 1),
        }
        rows = evaluate.evaluate_encoders(config, encoders, pixels=True, max_train=10000, k=20)
        print()
        print(
            f"Frozen-encoder evaluation on {config.data.name} "
            f"({rows[0]['n_train']} train / {rows[0]['n_test']} test images):"
        )
        print(evaluate.format_table(rows))
        # TF Serving layout: BASE/VERSION; re-running the demo replaces version 1.
        export_path = os.path.join(workdir, "export", "1")
        preset = augment.preset_for(config.data.augment, config.data.image_size)
        export_encoder(model.encoder, export_path, preset, config.model.image_size, overwrite=True)
        edge_formats = [f for f in formats if f != "savedmodel"]
        if edge_formats:  # beside the SavedModel, each checked against it
            edge.export_edge_for_data(
                model.encoder, export_path, edge_formats, config.data, overwrite=True,
                report=print,
            )  # fmt: skip
        with open(os.path.join(workdir, "demo.json"), "w") as f:
            json.dump(
                {
                    "rows": rows,
                    "train_seconds": train_s,
                    "total_seconds": time.time() - t0,
                    "start": result["start"],
                },
                f,
                indent=1,
            )
        print(f"\npretraining {train_s:.0f} s ({result['start']}); total {time.time() - t0:.0f} s")
        print(f"TensorBoard: tensorboard --logdir {workdir}")
        print(
            f"SavedModel: {export_path} (serving_default takes uint8 images "
            f"[B, {config.model.image_size}, {config.model.image_size}, 3])"
        )

    cli.run_main(run)


def main(argv: list[str] | None = None) -> None:
    """The `amdim-demo` command (also `python -m amdim_tf.cli.demo`, `python tools/demo.py`)."""
    cli.run_command(_main, __name__, argv)


if __name__ == "__main__":
    main()
