"""Exports a trained encoder as a SavedModel for deployment (TF Serving layout OUT/VERSION/).

    amdim-export --encoder=DIR                        # -> DIR/export/1
    amdim-export --config=configs/<preset>.py --weights=encoder.weights.h5 --out=OUT
    amdim-export --encoder=DIR --format=savedmodel,litert,litert_int8,onnx

--encoder (or its older name --workdir) takes the config from DIR/config.json and the
weights from the run's latest (or --which=best) checkpoint; --config / --weights / --out
override each part. The export takes raw pixels (uint8 0..255 by default, float [0, 1]
via `serve_float`) and returns r1, r5, r7 and global = r1 flattened
(amdim_tf/use/export.py). Serve it with

    docker run -p 8501:8501 -v "$PWD/OUT:/models/amdim" -e MODEL_NAME=amdim \\
        tensorflow/serving --model_base_path=/models/amdim

--format adds LiteRT / ONNX files beside the SavedModel (amdim_tf/use/edge.py), each
checked against it on real images of the run's data before it is kept.
"""

import os

from absl import flags
from ml_collections import config_flags

from amdim_tf import cli
from amdim_tf.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config the weights were trained with, e.g. configs/amdim_cifar10.py "
    "(default with --encoder: DIR/config.json). The preset normalisation follows "
    "config.data.augment, or the image size when that is ''.",
    lock_config=True,
)
cli.define_encoder_flags(__name__, "The run to export: a work directory written by amdim-train.")
_WEIGHTS = flags.DEFINE_string(
    "weights",
    None,
    "Keras weights of the encoder alone (encoder.save_weights('x.weights.h5')); "
    "default with --encoder: the run's checkpoint chosen by --which.",
)
_WHICH = flags.DEFINE_enum(
    "which",
    "latest",
    ["latest", "best"],
    "With --encoder: the latest checkpoint or the best by eval probe accuracy.",
)
_OUT = flags.DEFINE_string(
    "out",
    None,
    "Base directory of the export; the SavedModel goes to OUT/VERSION "
    "(default with --encoder: DIR/export).",
)
_VERSION = flags.DEFINE_integer(
    "version", 1, "Version subdirectory; TF Serving serves the highest."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing OUT/VERSION.")
_FORMAT = flags.DEFINE_string(
    "format",
    "savedmodel",
    "Comma-separated formats: savedmodel (TF Serving), litert (.tflite), litert_int8 "
    "(.tflite, int8 post-training quantisation), litert_int8w (.tflite, int8 weights, "
    "float activations), onnx. The others go beside the "
    "SavedModel in OUT/VERSION and are checked against it (pip install 'amdim-tf[edge]').",
)
_FEATURES = flags.DEFINE_string(
    "features", "r1", "Outputs of the LiteRT / ONNX files: r1, plus r5 and/or r7."
)
_CHECK_IMAGES = flags.DEFINE_integer(
    "check_images", 64, "Images of the eval split each LiteRT / ONNX file is checked on."
)
_REPRESENTATIVE = flags.DEFINE_integer(
    "representative_images",
    256,
    "Images of the train split calibrating the int8 ranges of litert_int8.",
)


def _run():
    workdir = cli.encoder_path(required=False)
    config_given = flags.FLAGS["config"].present  # .value would load the file here
    if not workdir and not (_WEIGHTS.value and config_given and _OUT.value):
        cli.fail(
            "pass --encoder=DIR, or all of --config=configs/<preset>.py "
            "--weights=FILE.weights.h5 --out=DIR (see --help)."
        )
    if _VERSION.value < 1:
        cli.fail(f"--version={_VERSION.value}; TF Serving needs a positive integer version.")
    if _OUT.value:  # OUT/VERSION is written after the encoder is read: checked first
        cli.check_writable_dir("out", _OUT.value)

    from amdim_tf.run import loader
    from amdim_tf.run.run_config import load_run_config
    from amdim_tf.use import edge, export

    formats = edge.parse_formats(_FORMAT.value)
    config = cli.load_config_flag(_CONFIG) if config_given else load_run_config(workdir)
    loaded = loader.open_encoder(
        _WEIGHTS.value or workdir,
        _WHICH.value,
        config=config if (_WEIGHTS.value or config_given) else None,
    )
    encoder, source, preset = loaded.encoder, loaded.source, loaded.preset
    features = edge.parse_features(_FEATURES.value, loaded.feature_names)  # before writing
    base = _OUT.value or os.path.join(workdir, "export")
    export_dir = os.path.join(base, str(_VERSION.value))
    edge_formats = [f for f in formats if f != "savedmodel"]
    if "savedmodel" not in formats:  # beside an existing SavedModel, checked against it
        return _export_edge(edge, encoder, export_dir, edge_formats, config, features)
    try:
        export.export_encoder(
            encoder,
            export_dir,
            preset=preset,
            image_size=loaded.image_size,
            overwrite=_OVERWRITE.value,
        )
    except FileExistsError as e:
        raise UserError(str(e)) from None
    info = loader.read_export_config(export_dir)
    shape = ", ".join(
        f"{k} {info[k]}" for k in ("image_size", "ndf", "n_rkhs", "n_depth") if k in info
    )
    print(f"exported {info['class']} ({shape}; preset {preset}) from {source} to {export_dir}")
    print(
        f"outputs {info['outputs']}; signatures serving_default (uint8 0..255) and "
        "serve_float (float32 [0, 1])"
    )
    print(
        f'serve: docker run -p 8501:8501 -v "{os.path.abspath(base)}:/models/amdim" '
        "-e MODEL_NAME=amdim tensorflow/serving --model_base_path=/models/amdim"
    )
    if edge_formats:
        _export_edge(edge, encoder, export_dir, edge_formats, config, features)


def _export_edge(edge, encoder, export_dir, formats, config, features):
    edge.export_edge_for_data(
        encoder, export_dir, formats, config.data, _CHECK_IMAGES.value, _REPRESENTATIVE.value,
        features=features, overwrite=_OVERWRITE.value, report=print,
    )  # fmt: skip


main = cli.command(__name__, _run)


if __name__ == "__main__":
    main()
