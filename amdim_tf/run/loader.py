"""A trained encoder as a Keras model to build on: `load_encoder` and `save_encoder`.

    encoder = amdim_tf.load_encoder("runs/c10")                     # a work directory
    encoder = amdim_tf.load_encoder("encoder.keras")                # a file save_encoder wrote
    x = keras.Input((32, 32, 3), dtype="uint8")
    enc = amdim_tf.load_encoder("runs/c10", include_preprocessing=True)
    y = keras.layers.Dense(10)(keras.layers.Flatten()(enc(x)["r1"]))
    keras.Model(x, y).fit(...)              # fine-tunes the encoder; enc.trainable = False freezes

What it returns is a `keras.Model` (AMDIM's, DIM's or CPC's encoder of this project, all
registered as Keras-serializable) whose call returns the dict of named features, always
with "r1" [B, 1, 1, D] (the global feature linear probes read; "r5" [B, 5, 5, D] and
"r7" [B, 7, 7, D] for AMDIM's encoder, Bachman et al. 2019, Sec. 3.5).

Input contract. The bare encoder (the default) takes what training fed it: float32
[B, S, S, 3] normalised with the preset of its training data,
`amdim_tf.data.augment.normalise(pixels01, preset)` (per-channel mean/std of CIFAR or
ImageNet; S = encoder.image_size, 32, 64 or 128; resize or centre-crop first, as
`augment.eval_view` does). `include_preprocessing=True` wraps it in `PixelEncoder`, which
normalises inside and so takes raw pixels, the way Keras users expect: uint8 0..255, or
float in [0, 1]. The dtype says which (as the SavedModel's two signatures do), so feed
`keras.Input(shape, dtype="uint8")` for 0..255 values; 0..255 *floats* would be read as
[0, 1] and give garbage features.

`save_encoder(workdir, "encoder.keras")` writes the `PixelEncoder` (so the file carries its
preset) as a standard Keras `.keras` file; `load_encoder` reads it back with or without the
preprocessing, and so does `keras.saving.load_model` once `amdim_tf.run.loader` is imported
(which registers the classes).

Why not a KerasHub preset. `keras_hub.models.Backbone.from_preset(dir)` only loads
subclasses of `keras_hub.models.Backbone` (it checks the registered class), so the
encoders would have to inherit from it, making keras-hub a hard dependency; and
keras-hub 0.32 installs 15 packages here (tensorflow-text, sentencepiece, tokenizers,
huggingface_hub, kagglehub, ...) for a feature this library does not need. A `.keras`
file is the format that KerasHub presets themselves wrap (config + weights), loads with
Keras alone, and keeps the pins (keras 3.15.1, tensorflow 2.21.0) untouched.

A SavedModel export (tools/export.py) is for serving; it is not a Keras model to
fine-tune: load it with `export.load_exported`, or `keras.layers.TFSMLayer`.
"""

import os

import keras
import tensorflow as tf

from amdim_tf.data import augment
from amdim_tf.errors import first_line
from amdim_tf.methods import AMDIMEncoder, CPCEncoder, DIMEncoder
from amdim_tf.run import workdir as workdir_lib

ENCODER_CLASSES = (AMDIMEncoder, DIMEncoder, CPCEncoder)
_EXPECTED = (
    "a work directory written by tools/train.py (holding config.json), a .keras file "
    "written by amdim_tf.save_encoder, or, with config=, an encoder .weights.h5 file or a "
    "run checkpoint"
)


@keras.saving.register_keras_serializable(package="amdim_tf")
class PixelEncoder(keras.Model):
    """An encoder with its training normalisation inside: raw pixels in, named features out.

    Args:
        encoder: one of this project's encoders (a dict with "r1" out, `image_size` set).
        preset: normalisation preset ("cifar", "stl", "imagenet"); default: the one
            training uses for `encoder.image_size` (`augment.preset_for`).

    Call: images [B, S, S, 3], uint8 in 0..255 or float in [0, 1] (S =
        encoder.image_size) -> the encoder's feature dict (r1 [B, 1, 1, D], ...).
    """

    def __init__(self, encoder, preset=None, **kwargs):
        super().__init__(**kwargs)
        preset = augment.preset_for(preset, encoder.image_size)
        if preset not in augment.PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; expected one of {augment.PRESETS}.")
        self.encoder = encoder
        self.preset = preset
        self.image_size = encoder.image_size
        self.n_rkhs = encoder.n_rkhs

    def build(self, input_shape):
        if not self.encoder.built:
            self.encoder.build(input_shape)

    def call(self, images, training=None):
        if images.dtype == "uint8":
            pixels = tf.cast(images, tf.float32) / 255.0
        else:
            pixels = tf.cast(images, tf.float32)
        return self.encoder(augment.normalise(pixels, self.preset), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(encoder=keras.saving.serialize_keras_object(self.encoder), preset=self.preset)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def _one_line(error):
    return first_line(error, limit=300)


def _describe(config):
    m = config.model
    return (
        f"config method={config.method} image_size={m.image_size} ndf={m.ndf} "
        f"n_rkhs={m.n_rkhs} n_depth={m.n_depth}"
    )


def _restore_checkpoint(config, checkpoint):
    encoder = workdir_lib.untrained_encoder(config)
    try:
        workdir_lib.restore_encoder(encoder, checkpoint)
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        raise ValueError(
            f"checkpoint {checkpoint} does not fit the encoder of {_describe(config)} "
            f"({_one_line(e)}); pass the config it was trained with."
        ) from None
    return encoder


def _preset_of(config):
    return augment.preset_for(config.data.augment, config.model.image_size)


def _is_saved_model(path):
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return True
    return any(
        os.path.exists(os.path.join(path, d, "saved_model.pb"))
        for d in os.listdir(path)
        if d.isdigit()
    )


def _load(path, which, config):
    """(bare encoder, preset or None) of any source `load_encoder` accepts."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, workdir_lib.CONFIG_FILE)):
            run_config = workdir_lib.load_run_config(path)
            checkpoint = workdir_lib.checkpoint_path(path, which)
            return _restore_checkpoint(run_config, checkpoint), _preset_of(run_config)
        if _is_saved_model(path):
            raise ValueError(
                f"{path} is a SavedModel export (for serving), not a Keras model to build "
                "on; load_encoder takes the run's work directory or a .keras file "
                "(amdim_tf.save_encoder), or load the export with "
                "amdim_tf.use.export.load_exported / keras.layers.TFSMLayer."
            )
        latest = tf.train.latest_checkpoint(path)
        if latest and config is not None:
            return _restore_checkpoint(config, latest), _preset_of(config)
        raise FileNotFoundError(
            f"{path} holds no config.json, SavedModel or checkpoint; expected {_EXPECTED}."
        )
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist; expected {_EXPECTED}.")
        try:
            model = keras.saving.load_model(path)
        except (ValueError, TypeError, OSError) as e:
            raise ValueError(f"cannot load {path} as a Keras model ({_one_line(e)}).") from None
        if isinstance(model, PixelEncoder):
            return model.encoder, model.preset
        if isinstance(model, ENCODER_CLASSES):
            return model, None
        raise ValueError(
            f"{path} holds a {type(model).__name__}, not an encoder of amdim_tf "
            f"({', '.join(c.__name__ for c in ENCODER_CLASSES)}); save one with "
            "amdim_tf.save_encoder."
        )
    if path.endswith(".weights.h5"):
        if config is None:
            raise ValueError(
                f"{path} holds weights but no architecture; pass config= (the run config "
                "they were trained with) or load a .keras file instead."
            )
        return workdir_lib.load_encoder_weights(config, path), _preset_of(config)
    if tf.io.gfile.exists(path + ".index"):
        if config is None:
            raise ValueError(
                f"{path} is a checkpoint without its config; pass config= or the work "
                "directory that holds it."
            )
        return _restore_checkpoint(config, path), _preset_of(config)
    raise FileNotFoundError(f"{path} does not exist; expected {_EXPECTED}.")


def load_encoder(path, include_preprocessing=False, which="latest", config=None):
    """The pretrained encoder at `path` as a trainable `keras.Model` (see the module docstring).

    Args:
        path: a work directory (config.json and the checkpoint chosen by `which`), a
            `.keras` file written by `save_encoder` (or `encoder.save`), or with `config`
            a `.weights.h5` file / a checkpoint prefix or directory.
        include_preprocessing: return a `PixelEncoder` taking uint8 0..255 or float [0, 1]
            pixels; False: the bare encoder taking normalised images.
        which: "latest" or "best" checkpoint of a work directory.
        config: the run config (ml_collections) for sources that hold none.

    Returns:
        a built keras.Model returning the dict of named features ("r1" [B, 1, 1, D], ...).
    """
    if which not in ("latest", "best"):
        raise ValueError(f"which={which!r}; expected 'latest' or 'best'.")
    encoder, preset = _load(path, which, config)
    if not include_preprocessing:
        return encoder
    model = PixelEncoder(encoder, preset, name="pixel_encoder")
    model.build((None, encoder.image_size, encoder.image_size, 3))
    return model


def save_encoder(source, out, which="latest", config=None, overwrite=False):
    """Writes the encoder of `source` as a `.keras` file, normalisation included.

    Args:
        source: anything `load_encoder` takes, or an encoder (keras.Model) itself.
        out: path ending in ".keras".
        which, config: as for `load_encoder`.
        overwrite: replace an existing file.

    Returns:
        out. `load_encoder(out)` gives the bare encoder back,
        `load_encoder(out, include_preprocessing=True)` the pixel model.
    """
    if not str(out).endswith(".keras"):
        raise ValueError(f"out={out!r} must end in '.keras' (the Keras model file format).")
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists; pick another name or pass overwrite=True.")
    if isinstance(source, PixelEncoder):
        model = source
    elif isinstance(source, keras.Model):
        model = PixelEncoder(source, name="pixel_encoder")
    else:
        model = load_encoder(source, include_preprocessing=True, which=which, config=config)
    model.build((None, model.image_size, model.image_size, 3))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    model.save(out)
    return out
