"""A trained encoder as a deployable SavedModel: raw pixels in, named features out.

The export holds everything a client needs and nothing of this project's code: the
per-dataset normalisation of the training pipeline (`augment.eval_view`) runs inside the
graph, BatchNorm runs in inference mode, and the outputs are named tensors (never looked
up by graph name, the lesson of google-research/simclr's hub modules):

    serving_default  images uint8   [B, S, S, 3] in 0..255  -> r1, r5, r7, global
    serve_float      images float32 [B, S, S, 3] in [0, 1]  -> r1, r5, r7, global

with r1 [B, 1, 1, D], r5 [B, 5, 5, D], r7 [B, 7, 7, D] (Bachman et al. 2019, §3.5: the
global and the 5x5 / 7x7 local embeddings) and global = r1 flattened to [B, D], the
feature linear probes read. S is the trained image size; another size, channel count or
rank is rejected at call time with a message naming [B, S, S, 3] (the signature's spec,
plus an in-graph check for the concrete signatures that TF Serving runs).

Layout (TensorFlow Serving wants numbered version directories under a base path;
`tools/export.py --out=BASE` writes BASE/1/):

    export_dir/saved_model.pb, variables/, fingerprint.pb   the SavedModel
    export_dir/amdim_encoder.json                           image_size, ndf, n_rkhs, ...

Usable three ways, none importing amdim_tf: `tf.saved_model.load(export_dir)`,
`keras.layers.TFSMLayer(export_dir, call_endpoint="serving_default")`, and TensorFlow
Serving (it serves the highest version under the base path):

    docker run -p 8501:8501 -v "$PWD/BASE:/models/amdim" -e MODEL_NAME=amdim \\
        tensorflow/serving --model_base_path=/models/amdim
    curl -d '{"instances": [<S x S x 3 nested list of 0-255 ints>]}' \\
        localhost:8501/v1/models/amdim:predict

Beware: a NumPy *float* array passed to the restored Python function
`loaded.serving_default` is cast to uint8 by TF's input binding without a warning
(0.7 -> 0); send float pixels to `serve_float`.
"""

import json
import os

import keras
import tensorflow as tf

from amdim_tf import augment

CONFIG_FILENAME = "amdim_encoder.json"
FEATURES = ("r1", "r5", "r7")  # exported when the encoder returns them; "global" always

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
        signatures={
            "serving_default": "uint8 [B,S,S,3] 0..255",
            "serve_float": "float32 [B,S,S,3] in [0,1]",
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
            training used for this image size (augment.preset_for_size).
        image_size: side S of the accepted images; default and only allowed value:
            encoder.image_size.
        features: encoder outputs to export besides "global"; default: those of
            ("r1", "r5", "r7") that the encoder returns.
        overwrite: replace an existing non-empty `export_dir` (served versions are
            meant to be immutable, so the default refuses).

    Returns:
        export_dir.
    """
    trained_size = getattr(encoder, "image_size", None)
    image_size = image_size or trained_size
    if image_size is None:
        raise ValueError(
            "export_encoder needs image_size: the encoder has no image_size attribute."
        )
    if trained_size is not None and image_size != trained_size:
        raise ValueError(
            f"image_size={image_size} differs from the encoder's image_size="
            f"{trained_size}; export at the size the encoder was built for."
        )
    preset = preset or augment.preset_for_size(image_size)
    if preset not in augment.PRESETS:
        raise ValueError(
            f"Unknown preset {preset!r}; expected one of {augment.PRESETS} "
            "(leave it empty to use the training preset for the image size)."
        )
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite:
        raise FileExistsError(
            f"{export_dir} already exists and is not empty; pick a new "
            "version directory or pass overwrite=True (--overwrite)."
        )

    spec_shape = [None, image_size, image_size, 3]
    if not encoder.built:
        encoder.build(tuple(spec_shape))
    probe = encoder(tf.zeros([1, image_size, image_size, 3]), training=False)
    if "r1" not in probe:
        raise ValueError(
            f"{type(encoder).__name__} returns {sorted(probe)}, no 'r1'; "
            "export_encoder needs the global feature 'r1' [B, 1, 1, D]."
        )
    if features is None:
        features = [k for k in FEATURES if k in probe]
    missing = [k for k in features if k not in probe]
    if missing:
        raise ValueError(
            f"features {missing} are not outputs of {type(encoder).__name__}; "
            f"available: {sorted(probe)}."
        )
    features = list(features)
    n_rkhs = int(probe["r1"].shape[-1])

    def check_shape(images, endpoint):
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

    def encode(pixels):  # [B, S, S, 3] float in [0, 1]
        out = encoder(normalise(pixels, preset), training=False)  # BN uses moving stats
        result = {k: out[k] for k in features}
        result["global"] = tf.reshape(out["r1"], [-1, n_rkhs])  # [B, D]
        return result

    def serve_uint8(images):
        images = check_shape(images, "serving_default")
        return encode(tf.cast(images, tf.float32) / 255.0)

    def serve_float(images):
        images = check_shape(images, "serve_float")
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
            return encode(tf.identity(images))

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    # Naming the uint8 endpoint "serving_default" makes it TF Serving's default;
    # ExportArchive would otherwise alias the first endpoint.
    archive.add_endpoint(
        "serving_default", serve_uint8, [tf.TensorSpec(spec_shape, tf.uint8, name="images")]
    )
    archive.add_endpoint(
        "serve_float", serve_float, [tf.TensorSpec(spec_shape, tf.float32, name="images")]
    )
    archive.write_out(export_dir, verbose=False)
    with open(os.path.join(export_dir, CONFIG_FILENAME), "w") as f:
        json.dump(_encoder_config(encoder, preset, image_size, features, n_rkhs), f, indent=1)
    return export_dir


def resolve_export_dir(path):
    """`path` if it is a SavedModel, else its highest numbered version (TF Serving layout)."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted(
        int(d)
        for d in (os.listdir(path) if os.path.isdir(path) else [])
        if d.isdigit() and os.path.exists(os.path.join(path, d, "saved_model.pb"))
    )
    if not versions:
        raise FileNotFoundError(
            f"no SavedModel at {path} (no saved_model.pb there nor in a "
            "numbered version directory); write one with tools/export.py."
        )
    return os.path.join(path, str(versions[-1]))


def read_export_config(path):
    """The amdim_encoder.json of an export (SavedModel or TF Serving base directory)."""
    with open(os.path.join(resolve_export_dir(path), CONFIG_FILENAME)) as f:
        return json.load(f)


def load_exported(path):
    """tf.saved_model.load of an export (SavedModel or TF Serving base directory).

    The result has `.serving_default(images)` and `.serve_float(images)` returning the
    feature dict, and `.signatures[...]`; `read_export_config(path)` gives its JSON.
    """
    return tf.saved_model.load(resolve_export_dir(path))
