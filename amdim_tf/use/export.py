"""A trained encoder as a deployable SavedModel: raw pixels in, named features out.

The export holds everything a client needs and nothing of this project's code: the
evaluation view and the per-dataset normalisation of the training pipeline
(`augment.eval_view`) run inside the graph, BatchNorm runs in inference mode, and the
outputs are named tensors (never looked up by graph name, the lesson of
google-research/simclr's hub modules):

    serving_default  images uint8   [B, H, W, 3] 0..255, any size  -> r1, r5, r7, global
    serve_float      images float32 [B, S, S, 3] in [0, 1], the     -> r1, r5, r7, global
                     evaluation view itself (augment.eval_pixels)

with r1 [B, 1, 1, D], r5 [B, 5, 5, D], r7 [B, 7, 7, D] (Bachman et al. 2019, §3.5: the
global and the 5x5 / 7x7 local embeddings) and global = r1 flattened to [B, D], the
feature linear probes read. `serving_default` is the pixel contract of every artifact
(`run/pixels.py`): an image of any size gets the evaluation view of the preset (resized /
centre-cropped), one smaller than `pixels.min_image_side` is refused naming the minimum.
`serve_float` is the explicitly named [0, 1] form, for pipelines that already made the
evaluation view: exactly S px, values outside [0, 1] refused. A wrong channel count or
rank is rejected at call time with a message naming the expected shape (the signature's
spec, plus an in-graph check for the concrete signatures that TF Serving runs).

Layout (TensorFlow Serving wants numbered version directories under a base path;
`amdim-export --out=BASE` writes BASE/1/):

    export_dir/saved_model.pb, variables/, fingerprint.pb   the SavedModel
    export_dir/amdim_encoder.json                           image_size, ndf, n_rkhs, ...

A version appears whole or not at all: it is written to a hidden directory beside it
(BASE/.1.staging-<pid>-*, ignored by TF Serving, which serves numbered directories only)
and renamed into place; a version lacking one of the three parts (an export killed by
older code, a hand copy) is refused when loaded, naming what is missing.

Usable three ways, none importing amdim_tf: `tf.saved_model.load(export_dir)`,
`keras.layers.TFSMLayer(export_dir, call_endpoint="serving_default")`, and TensorFlow
Serving (it serves the highest version under the base path):

    docker run -p 8501:8501 -v "$PWD/BASE:/models/amdim" -e MODEL_NAME=amdim \\
        tensorflow/serving --model_base_path=/models/amdim
    curl -d '{"instances": [<S x S x 3 nested list of 0-255 ints>]}' \\
        localhost:8501/v1/models/amdim:predict

Beware: a NumPy *float* array passed to the restored Python function
`loaded.serving_default` is cast to uint8 by TF's input binding without a warning
(0.7 -> 0, 200.4 -> 200); send uint8 pixels.
"""

import json
import os

import keras
import tensorflow as tf

from amdim_tf import durable
from amdim_tf.data import augment
from amdim_tf.errors import OutputExistsError, UserError
from amdim_tf.methods import amdim
from amdim_tf.methods.features import GLOBAL

# Reading an export (the layout below) belongs to the one loader; writing it, here.
from amdim_tf.run.loader import EXPORT_CONFIG_FILE, missing_parts
from amdim_tf.run.pixels import assert_pixels_shape, min_image_side, views

FEATURES = amdim.FEATURES  # exported when the encoder returns them; "global" always

# serve_float rejects inputs outside [0, 1] by more than this: it catches clients that
# send 0..255 floats (which would give garbage features silently) but tolerates the
# small overshoot of a bicubic resize.
_FLOAT_RANGE_SLACK = 0.01


def normalise(pixels, preset):
    """Float pixels in [0, 1] -> network input, exactly as training normalised them."""
    return augment.normalise(pixels, preset)


def _encoder_config(encoder, preset, image_size, features, n_rkhs):
    config = {"class": type(encoder).__name__, "preset": preset, "image_size": image_size}
    for key in ("ndf", "n_rkhs", "n_depth", "use_bn"):
        value = getattr(encoder, key, None)
        if value is not None:
            config[key] = value
    config.update(
        n_rkhs=n_rkhs,
        outputs=list(features) + ["global"],
        min_image_side=min_image_side(image_size),
        signatures={
            "serving_default": "uint8 [B,H,W,3] 0..255, any size (evaluation view inside)",
            "serve_float": "float32 [B,S,S,3] in [0,1], the evaluation view",
        },
    )
    return config


def export_encoder(
    encoder, export_dir, preset=None, image_size=None, features=None, overwrite=False
):
    """Writes `encoder` as a SavedModel at `export_dir` (the SavedModel itself, not a base).

    Args:
        encoder: a keras.Model whose call(images, training) returns a dict with "r1"
            [B, 1, 1, D] (AMDIMEncoder, or the DIM/CPC encoders of this project).
        export_dir: directory to write; for TensorFlow Serving, a version directory
            such as BASE/1 (see the module docstring).
        preset: normalisation preset ("cifar", "stl", "imagenet"); default: the one
            training used for this image size (augment.preset_for).
        image_size: side S of the accepted images; default and only allowed value:
            encoder.image_size.
        features: encoder outputs to export besides "global"; default: those of
            ("r1", "r5", "r7") that the encoder returns.
        overwrite: replace an existing non-empty `export_dir` (served versions are
            meant to be immutable, so the default refuses). The old version stays
            whole until the new one is complete, then is swapped out by two renames.

    Returns:
        export_dir.
    """
    image_size, preset = _size_and_preset(encoder, image_size, preset)
    output = saved_model_output(export_dir, EXPORT_CONFIG_FILE, "a SavedModel export")
    _refuse_existing(export_dir, overwrite)
    spec_shape = [None, image_size, image_size, 3]
    if not encoder.built:
        encoder.build(tuple(spec_shape))
    probe = encoder(tf.zeros([1, image_size, image_size, 3]), training=False)
    features = _checked_features(encoder, probe, features)
    n_rkhs = int(probe[GLOBAL].shape[-1])
    serve_uint8, serve_float = _endpoints(encoder, probe, features, preset, image_size)
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    # Naming the uint8 endpoint "serving_default" makes it TF Serving's default;
    # ExportArchive would otherwise alias the first endpoint.
    any_size = [None, None, None, 3]
    archive.add_endpoint(
        "serving_default", serve_uint8, [tf.TensorSpec(any_size, tf.uint8, name="images")]
    )
    archive.add_endpoint(
        "serve_float", serve_float, [tf.TensorSpec(spec_shape, tf.float32, name="images")]
    )
    config = _encoder_config(encoder, preset, image_size, features, n_rkhs)
    return write_saved_model(archive, output, config)


def _size_and_preset(encoder, image_size, preset) -> tuple:
    """(image_size, preset) of an export: the encoder's size only, a known preset."""
    trained_size = getattr(encoder, "image_size", None)
    image_size = image_size or trained_size
    if image_size is None:
        raise UserError("export_encoder needs image_size: the encoder has no image_size attribute.")
    if trained_size is not None and image_size != trained_size:
        raise UserError(
            f"image_size={image_size} differs from the encoder's image_size="
            f"{trained_size}; export at the size the encoder was built for."
        )
    preset = augment.preset_for(preset, image_size)
    if preset not in augment.PRESETS:
        raise UserError(
            f"Unknown preset {preset!r}; expected one of {augment.PRESETS} "
            "(leave it empty to use the training preset for the image size)."
        )
    return image_size, preset


def _refuse_existing(export_dir, overwrite) -> None:
    """Served versions are immutable: a non-empty `export_dir` only with overwrite."""
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite:
        missing = missing_parts(export_dir)
        what = "already exists and is not empty"
        if missing:
            what = f"holds an incomplete export (missing {', '.join(missing)})"
        raise OutputExistsError(
            f"{export_dir} {what}; pick a new version directory or pass overwrite=True "
            "(--overwrite) to replace it."
        )


def _checked_features(encoder, probe, features) -> list:
    """The outputs to export: `features` (default those of FEATURES the encoder returns),
    each one the encoder's, beside the global feature it must return."""
    if GLOBAL not in probe:
        raise UserError(
            f"{type(encoder).__name__} returns {sorted(probe)}, no {GLOBAL!r}; "
            f"export_encoder needs the global feature {GLOBAL!r} [B, 1, 1, D]."
        )
    if features is None:
        features = [k for k in FEATURES if k in probe]
    missing = [k for k in features if k not in probe]
    if missing:
        raise UserError(
            f"features {missing} are not outputs of {type(encoder).__name__}; "
            f"available: {sorted(probe)}."
        )
    return list(features)


def _check_shape(images, endpoint, image_size):
    # The signature's [None, S, S, 3] spec is enforced by the Python function of a
    # loaded model, but not by its concrete signatures (what TF Serving and
    # `loaded.signatures[...]` run). Without this check (TF 2.21) a 28 px batch fails
    # deep in the graph, a 1-channel batch returns garbage features and an
    # unbatched [S, S, 3] image aborts the process. Padding the shape makes a wrong
    # rank fail this check too.
    shape = tf.shape(images)
    dims = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[1:4]
    ok = tf.logical_and(
        tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(dims, [image_size, image_size, 3]))
    )
    check = tf.debugging.Assert(
        ok,
        [
            f"{endpoint} expects images of shape [B, {image_size}, {image_size}, 3] "
            f"(batch, height, width, RGB); received shape",
            shape,
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _endpoints(encoder, probe, features, preset, image_size) -> tuple:
    """(serve_uint8, serve_float): the export's two functions, images -> {feature: ...}."""
    n_rkhs = int(probe[GLOBAL].shape[-1])

    def run_encoder(inputs):  # [B, S, S, 3] normalised
        out = encoder(inputs, training=False)  # BN uses moving stats
        result = {k: out[k] for k in features}
        result["global"] = tf.reshape(out[GLOBAL], [-1, n_rkhs])  # [B, D]
        return result

    def empty_result():
        # A batch of 0 images gets outputs of 0 rows, as TF Serving clients expect; the
        # convolutions themselves fail on an empty batch (oneDNN, TF 2.21).
        result = {k: tf.zeros([0, *probe[k].shape[1:]], probe[k].dtype) for k in features}
        result["global"] = tf.zeros([0, n_rkhs], probe[GLOBAL].dtype)  # [0, D]
        return result

    def encode(images, to_inputs):
        return tf.cond(
            tf.shape(images)[0] > 0, lambda: run_encoder(to_inputs(images)), empty_result
        )

    def serve_uint8(images):  # [B, H, W, 3] uint8, any size
        images = assert_pixels_shape(images, image_size, "serving_default")
        return encode(images, lambda x: views(x, preset, image_size, "serving_default"))

    def serve_float(images):
        images = _check_shape(images, "serve_float", image_size)
        checks = [
            tf.debugging.assert_greater_equal(
                tf.reduce_min(images),
                -_FLOAT_RANGE_SLACK,
                message="serve_float expects float32 pixels in [0, 1]",
            ),
            tf.debugging.assert_less_equal(
                tf.reduce_max(images),
                1.0 + _FLOAT_RANGE_SLACK,
                message="serve_float expects float32 pixels in [0, 1], not 0..255; divide by "
                "255 or send uint8 pixels to serving_default",
            ),
        ]
        with tf.control_dependencies(checks):
            return encode(tf.identity(images), lambda x: normalise(x, preset))

    return serve_uint8, serve_float


def saved_model_output(export_dir: str, config_file: str, what: str) -> durable.OutputDir:
    """The `durable.OutputDir` of a SavedModel version (OUT/VERSION/), made before the work:
    it puts back a version parked by a killed export; `config_file`, written last, marks a
    complete one. Whatever is there is replaced (the callers refuse without --overwrite)."""
    return durable.OutputDir(export_dir, config_file, what, flag="", replace_any=True)


def write_saved_model(archive, output: durable.OutputDir, config: dict) -> str:
    """The one SavedModel writer (the encoder's export and the classifier's): `archive`
    (a keras.export.ExportArchive) and `config` as JSON beside it, written in a stage beside
    the version and renamed into place (a killed export leaves a hidden stage only, which
    the next export removes). Returns the version's path."""
    with output.staged() as stage:
        write_archive(archive, stage, output.manifest, config)
    return output.given


def write_archive(archive, directory: str, config_file: str, config: dict) -> None:
    """Writes the SavedModel of `archive` and `config_file` (last) into `directory` as it
    is: for a directory inside a stage already (`write_saved_model` stages one)."""
    archive.write_out(directory, verbose=False)
    with open(os.path.join(directory, config_file), "w") as f:
        json.dump(config, f, indent=1)
