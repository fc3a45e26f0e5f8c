"""The one loader: any path that holds a trained encoder -> the encoder with its preset.

    loaded = open_encoder("runs/c10")                 # a work directory (latest / best)
    loaded = open_encoder("encoder.keras")            # a file save_encoder wrote
    loaded = open_encoder("runs/c10/export")          # a SavedModel export (or one version)
    loaded = open_encoder("enc.weights.h5", config=config)    # weights, or a checkpoint
    loaded.features(pixels)                           # pixels 0..255, any size -> maps
    loaded.pooled(pixels, ("r1", "r5"))               # pixels 0..255, any size -> {key: [B, D]}
    loaded.pooled_unit_views(views01, ("r1",))        # eval views in [0, 1], size S -> same
    loaded.encoder / loaded.keras_model               # Keras models where there are ones
    model, config, ckpt = open_run_model("runs/c10")  # a run's encoder and objective (pictures)
    encoder = untrained_encoder(config, seed=1)       # a baseline; the caller's RNGs untouched

Every tool and library function that needs an encoder (evaluate, embed, export,
finetune, compare) comes through `open_encoder`, and visualize's training model through
`open_run_model`; the run-checkpoint restore beneath both is `checkpoints.restore_parts`.

The Keras side, `load_encoder` and `save_encoder` (also `amdim_tf.load_encoder` /
`amdim_tf.save_encoder`):

    encoder = amdim_tf.load_encoder("runs/c10")                     # a work directory
    encoder = amdim_tf.load_encoder("encoder.keras")                # a file save_encoder wrote
    x = keras.Input((32, 32, 3), dtype="uint8")
    y = keras.layers.Dense(10)(encoder(x)["r1"])
    keras.Model(x, y).fit(...)          # fine-tunes the encoder; encoder.trainable = False freezes
    bare = amdim_tf.load_encoder("runs/c10", include_preprocessing=False)  # normalised views

What it returns is a `keras.Model` (AMDIM's, DIM's or CPC's encoder of this project, all
registered as Keras-serializable) whose call returns the dict of named features, always
with "r1" [B, 1, 1, D] (the global feature linear probes read; "r5" [B, 5, 5, D] and
"r7" [B, 7, 7, D] for AMDIM's encoder, Bachman et al. 2019, Sec. 3.5).

Input contract. By default (`include_preprocessing=True`) it is a `PixelEncoder`
(`run/pixels.py`), the pixel contract of every artifact a user is handed (the SavedModel,
`encoder.keras`): it takes images as Keras passes them, pixels 0..255 (uint8 or float)
of any size, views and normalises them inside as evaluation does, and returns what a
classifier reads: "r1" flattened to [B, D] (and local maps with `features=("r1", "r5")`),
the variables no requested output uses frozen. The bare encoder, asked for by name with
`include_preprocessing=False`, takes what training fed it: float32 [B, S, S, 3]
normalised with the preset of its training data,
`amdim_tf.data.augment.eval_view(image, preset)` (S = encoder.image_size, 32, 64 or 128);
given anything else it returns wrong features without a word, hence not the default.

`save_encoder(workdir, "encoder.keras")` writes the `PixelEncoder` (so the file carries its
preset) as a standard Keras `.keras` file; `load_encoder` reads it back (the bare encoder
with `include_preprocessing=False`), and so does `keras.saving.load_model` after
`import amdim_tf` (which registers the classes).

Why not a KerasHub preset. `keras_hub.models.Backbone.from_preset(dir)` only loads
subclasses of `keras_hub.models.Backbone` (it checks the registered class), so the
encoders would have to inherit from it, making keras-hub a hard dependency; and
keras-hub 0.32 installs 15 packages here (tensorflow-text, sentencepiece, tokenizers,
huggingface_hub, kagglehub, ...) for a feature this library does not need. A `.keras`
file is the format that KerasHub presets themselves wrap (config + weights), loads with
Keras alone, and keeps the pins (keras 3.15.1, tensorflow 2.21.0) untouched.

A SavedModel export (`use/export.py`) is for serving; it is not a Keras model to
fine-tune: `open_encoder` gives its features, `keras.layers.TFSMLayer` a layer. Reading
an export (`resolve_export_dir`, `read_export_config`, `missing_parts`) lives here, its
writing in `use/export.py`.
"""

import dataclasses
import hashlib
import json
import os
import random
import zipfile

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from amdim_tf import config_lib, durable
from amdim_tf.data import augment
from amdim_tf.data.pixel_scale import PIXEL_MAX, to_uint8
from amdim_tf.errors import OutputExistsError, UserError, cause
from amdim_tf.methods import AMDIMEncoder, CPCEncoder, DIMEncoder, build_encoder
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run import checkpoints
from amdim_tf.run.features import check_feature_keys, pool
from amdim_tf.run.pixels import PixelEncoder, check_pixels_shape, views
from amdim_tf.run.run_config import load_run_config
from amdim_tf.run.workdir import CONFIG_FILE

ENCODER_CLASSES = (AMDIMEncoder, DIMEncoder, CPCEncoder)
# An export's description of itself, written beside its SavedModel (use/export.py).
EXPORT_CONFIG_FILE = "amdim_encoder.json"
# A version directory is complete when it has all of these (see missing_parts).
_EXPORT_PARTS = ("saved_model.pb", "variables/", EXPORT_CONFIG_FILE)
_EXPECTED = (
    "a work directory written by amdim-train (holding config.json), a .keras file "
    "written by amdim_tf.save_encoder, a SavedModel export of amdim-export, or, with "
    "config=, an encoder .weights.h5 file or a run checkpoint"
)


def preset_of(config: ml_collections.ConfigDict) -> str:
    """The normalisation preset a run config trained with."""
    return augment.preset_for(config.data.augment, config.model.image_size)


def _describe(config):
    m = config.model
    return (
        f"config method={config.method} image_size={m.image_size} ndf={m.ndf} "
        f"n_rkhs={m.n_rkhs} n_depth={m.n_depth}"
    )


def untrained_encoder(config: ml_collections.ConfigDict, seed: int = None) -> keras.Model:
    """The encoder of `config`, built, with the initial weights of `seed` (default config.seed).

    The caller's random state is left as it was: Keras draws the seed of every unseeded
    initializer from Python's `random` as the layer is made, so that module alone is seeded,
    and only while the encoder is built (the weights are those `keras.utils.set_random_seed`
    would give, without resetting the NumPy, TensorFlow and Keras seeds of the caller)."""
    state = random.getstate()
    random.seed(config.seed if seed is None else seed)
    try:
        enc = build_encoder(config)
        size = config.model.image_size
        enc.build((None, size, size, 3))
    finally:
        random.setstate(state)
    return enc


def _from_checkpoint(config, checkpoint):
    encoder = untrained_encoder(config)
    try:
        checkpoints.restore_parts(checkpoint, encoder=encoder)
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        raise UserError(
            f"checkpoint {checkpoint} does not fit the encoder of {_describe(config)} "
            f"({cause(e)}); pass the config it was trained with."
        ) from None
    return encoder


def _from_weights(config, weights):
    """The encoder of `config`, built, with the weights of a Keras .weights.h5 file."""
    encoder = build_encoder(config)
    size = config.model.image_size
    encoder.build((None, size, size, 3))
    try:
        encoder.load_weights(weights)
    except ValueError as e:
        # Keras reports a mismatch over many lines; the first names the layer.
        raise UserError(
            f"{weights} does not fit the encoder of this config ({cause(e)}); pass "
            "the --config (and --config.* overrides) it was trained with."
        ) from None
    return encoder


def _from_keras_file(path):
    """(bare encoder, preset or None) of a `.keras` file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; expected {_EXPECTED}.")
    # Keras reports a damaged file as "File not found" or a KeyError: say what it is.
    fix = "write it again with amdim_tf.save_encoder (or encoder.save)"
    if os.path.getsize(path) == 0:
        raise UserError(f"{path} is empty (0 bytes), not a Keras model; {fix}.")
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path} is not a .keras file (not a zip archive: damaged, cut short or another "
            f"format); {fix}."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise UserError(f"{path} is a damaged zip archive ({cause(e)}); {fix}.") from None
    if bad is not None:
        raise UserError(f"{path} is a damaged zip archive (member {bad} is corrupt); {fix}.")
    missing = [n for n in ("config.json", "model.weights.h5") if n not in names]
    if missing:
        raise UserError(
            f"{path} is a zip archive without {' and '.join(missing)}, not a Keras .keras "
            f"file; {fix}."
        )
    try:
        model = keras.saving.load_model(path)
    except (ValueError, TypeError, OSError, KeyError) as e:
        raise UserError(f"cannot load {path} as a Keras model ({cause(e)}).") from None
    if isinstance(model, PixelEncoder):
        return model.encoder, model.preset
    if isinstance(model, ENCODER_CLASSES):
        return model, None
    raise UserError(
        f"{path} holds a {type(model).__name__}, not an encoder of amdim_tf "
        f"({', '.join(c.__name__ for c in ENCODER_CLASSES)}); save one with "
        "amdim_tf.save_encoder."
    )


# -- reading a SavedModel export --------------------------------------------------------


def missing_parts(export_dir: str) -> list:
    """The parts of a complete export ("saved_model.pb", "variables/", EXPORT_CONFIG_FILE)
    that `export_dir` lacks; empty when it is complete."""
    return [
        part
        for part in _EXPORT_PARTS
        if not (os.path.isdir if part.endswith("/") else os.path.isfile)(
            os.path.join(export_dir, part.rstrip("/"))
        )
    ]


def _is_export(path):
    if len(missing_parts(path)) < len(_EXPORT_PARTS):
        return True
    return any(d.isdigit() and os.path.isdir(os.path.join(path, d)) for d in os.listdir(path))


def resolve_export_dir(path: str) -> str:
    """`path` if it is a version directory, else its highest numbered version (the one
    TF Serving serves); refuses an incomplete version, naming what it lacks."""
    if len(missing_parts(path)) == len(_EXPORT_PARTS):  # not a version: a base directory
        versions = sorted(
            int(d)
            for d in (os.listdir(path) if os.path.isdir(path) else [])
            if d.isdigit() and os.path.isdir(os.path.join(path, d))
        )
        if not versions:
            raise FileNotFoundError(
                f"no SavedModel at {path} (no saved_model.pb there nor in a "
                "numbered version directory); write one with amdim-export."
            )
        path = os.path.join(path, str(versions[-1]))
    missing = missing_parts(path)
    if missing:  # ValueError: found, but unusable (callers probing paths catch FileNotFound)
        raise UserError(
            f"{path} is an incomplete export (missing {', '.join(missing)}); re-run "
            "amdim-export for that version with --overwrite."
        )
    return path


def read_export_config(path: str) -> dict:
    """The amdim_encoder.json of a complete export (version or TF Serving base directory)."""
    with open(os.path.join(resolve_export_dir(path), EXPORT_CONFIG_FILE)) as f:
        return json.load(f)


# -- the one loader ---------------------------------------------------------------------


@dataclasses.dataclass
class Loaded:
    """A trained encoder, whatever held it.

    Attributes:
        kind: "workdir", "checkpoint", "weights", "keras" or "savedmodel".
        path: what was opened.
        image_size: side S of the images it takes.
        preset: the normalisation preset of its training data.
        feature_names: its outputs ("r1", and "r5" / "r7" for AMDIM's encoder).
        description: one line for reports ("AMDIMEncoder from runs/c10 (preset cifar)").
        source: the checkpoint name (work directory), else the file or export directory.
        run_config: the run's config (work directory, or the config= given), else None.
        encoder: the bare Keras encoder (normalised input); None for a SavedModel.
        saved_model: the `tf.saved_model.load` object of an export (its `.signatures`,
            `.serving_default`, `.serve_float`); None for the other kinds.
        fingerprint: the encoder's identity (`weights_fingerprint`), computed on first use.
    """

    kind: str
    path: str
    image_size: int
    preset: str
    feature_names: tuple
    description: str
    source: str
    run_config: ml_collections.ConfigDict = None
    encoder: keras.Model = None
    saved_model: object = None
    _pixel_model: keras.Model = None
    _pooled_fns: dict = dataclasses.field(default_factory=dict)
    _fingerprint: str = None

    @property
    def fingerprint(self) -> str:
        """This encoder's identity, "sha256:<hex>" (see `weights_fingerprint`)."""
        if self._fingerprint is None:
            if self.saved_model is None:
                weights = self.encoder.weights
            else:  # ExportArchive lists the tracked encoder's weights; other SavedModels none
                weights = getattr(self.saved_model, "variables", ())
            self._fingerprint = weights_fingerprint(weights, self.preset)
        return self._fingerprint

    @property
    def keras_model(self):
        """The `PixelEncoder` (pixels 0..255 in, r1 [B, D] out); None for a SavedModel."""
        if self._pixel_model is None and self.encoder is not None:
            model = PixelEncoder(self.encoder, self.preset, name="pixel_encoder")
            model.build((None, self.image_size, self.image_size, 3))
            self._pixel_model = model
        return self._pixel_model

    def features(self, pixels) -> dict:
        """Feature maps (r1 [B, 1, 1, D], ...) of images [B, H, W, 3], pixels 0..255
        (uint8 or float), any size: the pixel contract of `run/pixels.py` (inference)."""
        pixels = tf.convert_to_tensor(pixels)
        what = f"the encoder at {self.path}"
        if self.saved_model is None:
            return self.encoder(views(pixels, self.preset, self.image_size, what), training=False)
        check_pixels_shape(pixels.shape, self.image_size, what)
        if pixels.dtype != tf.uint8:
            pixels = to_uint8(pixels, peak=PIXEL_MAX)
        out = self.saved_model.serving_default(pixels)
        return {k: out[k] for k in self.feature_names}

    def pooled(self, pixels, keys=(GLOBAL,)) -> dict:
        """{key: float32 [B, D]} (`features.pool`) of images [B, H, W, 3], pixels 0..255
        (uint8 or float), any size: the pixel contract of `features`."""
        keys = tuple(keys)
        check_feature_keys(keys, self.feature_names, f"the encoder at {self.path}")
        return pool(self.features(pixels), keys)

    def pooled_unit_views(self, unit_views, keys=(GLOBAL,)) -> dict:
        """`pooled` of evaluation views already made, as pixels: float [B, S, S, 3] in
        [0, 1] at the encoder's size S, what `augment.eval_pixels` returns (embed's path,
        which views each image once in tf.data; this scale is this method's, never guessed
        from a dtype)."""
        keys = tuple(keys)
        if keys not in self._pooled_fns:
            check_feature_keys(keys, self.feature_names, f"the encoder at {self.path}")
            size = self.image_size

            @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
            def encode(pixels01):
                if self.saved_model is None:
                    out = self.encoder(augment.normalise(pixels01, self.preset), training=False)
                else:
                    out = self.saved_model.serve_float(pixels01)
                return pool(out, keys)

            self._pooled_fns[keys] = encode
        return self._pooled_fns[keys](unit_views)


def open_run_model(workdir, which: str = "latest", overrides=None) -> tuple:
    """(model, config, checkpoint path): a run's `SelfSupervisedModel` with its trained
    encoder and objective (the mixture MLP that AMDIM's q needs), for pictures of what
    it learned; the probes are not restored.

    `overrides` ({"data.path": ...} or ["data.path=...", ...]) changes where the run's
    data are, not what was trained (`config_lib.with_data_overrides`). The encoder and
    objective are read by `checkpoints.restore_parts`, so a run of another architecture
    fails loudly.
    """
    from amdim_tf.run.build import build_model  # the training model: only this needs it

    config = config_lib.with_data_overrides(load_run_config(workdir), overrides)
    path = checkpoints.checkpoint_path(workdir, which)
    # The probes are not needed (nor restored): the run's class count only sizes them.
    model = build_model(config, steps_per_epoch=1, num_classes=int(config.data.num_classes))
    parts = {"encoder": model.encoder}
    if isinstance(model.objective, keras.layers.Layer):
        parts["objective"] = model.objective
    checkpoints.restore_parts(path, **parts)
    return model, config, path


def weights_fingerprint(weights, preset: str) -> str:
    """The identity of an encoder: "sha256:<hex>" over its weights' values and its preset.

    Each weight is hashed by dtype, shape and bytes, and the sorted list of those digests
    (with the preset's name) is hashed again: the order and the names of the variables
    do not enter, because they differ between the kinds that hold one encoder. So one
    encoder gives the same fingerprint read from its work directory, from the `.keras`
    file `save_encoder` wrote of it, and from its SavedModel export
    (tests/use/test_search.py, tests/use/test_embed.py); other weights, or the same
    weights under another preset, give another. Cost: one sha256 pass over the weights'
    bytes, measured at 2.8 s per GB on this 2-core machine (milliseconds for the tiny
    test encoders); it is computed once per opened encoder, when first asked for.
    """
    digests = []
    for weight in weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        head = f"{value.dtype.str}{list(value.shape)}".encode()
        digests.append(hashlib.sha256(head + value.tobytes()).hexdigest())
    whole = hashlib.sha256(f"preset={preset}\n".encode())
    for digest in sorted(digests):
        whole.update(digest.encode() + b"\n")
    return "sha256:" + whole.hexdigest()


def _opened(kind, path, source, encoder, preset, run_config=None):
    preset = augment.preset_for(preset, encoder.image_size)
    return Loaded(
        kind=kind,
        path=path,
        image_size=int(encoder.image_size),
        preset=preset,
        feature_names=tuple(encoder.feature_shapes),
        description=f"{type(encoder).__name__} from {path} (preset {preset})",
        source=source,
        run_config=run_config,
        encoder=encoder,
    )


def _needs_config(path, what, config):
    if config is None:
        raise UserError(
            f"{path} is {what}, which holds no architecture; pass config= (the run config it "
            "was trained with; --config for the tools), or load the run's work directory "
            "or a .keras file instead."
        )


def open_encoder(path, which: str = "latest", config: ml_collections.ConfigDict = None) -> Loaded:
    """The trained encoder at `path`, with its preset, image size and feature names.

    Args:
        path: a work directory (config.json and the checkpoint chosen by `which`), a
            `.keras` file written by `save_encoder` (or `encoder.save`), a SavedModel
            export (a version directory or its base), or, with `config`, a `.weights.h5`
            file or a run checkpoint (prefix, or a directory holding one).
        which: "latest" or "best" checkpoint of a work directory.
        config: the run config for sources that hold none; with a work directory, the
            config its checkpoint is read with instead of the run's own.

    Returns:
        a `Loaded`.
    """
    if which not in ("latest", "best"):
        raise UserError(f"which={which!r}; expected 'latest' or 'best'.")
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, CONFIG_FILE)):
            checkpoint = checkpoints.checkpoint_path(path, which)
            if config is not None:  # the run's checkpoint read with another config
                return open_encoder(checkpoint, config=config)
            run_config = load_run_config(path)
            encoder = _from_checkpoint(run_config, checkpoint)
            return _opened(
                "workdir", path, os.path.basename(checkpoint), encoder, preset_of(run_config),
                run_config,
            )  # fmt: skip
        if _is_export(path):
            return _open_export(path)
        latest = tf.train.latest_checkpoint(path)
        if latest:
            _needs_config(path, "a folder of checkpoints", config)
            encoder = _from_checkpoint(config, latest)
            return _opened("checkpoint", path, latest, encoder, preset_of(config), config)
        raise FileNotFoundError(
            f"{path} holds no config.json, SavedModel or checkpoint; expected {_EXPECTED}."
        )
    if path.endswith(".keras"):
        encoder, preset = _from_keras_file(path)
        return _opened("keras", path, path, encoder, preset)
    if path.endswith(".weights.h5"):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} does not exist; pass the .weights.h5 file written by "
                "encoder.save_weights()."
            )
        _needs_config(path, "a weights file", config)
        encoder = _from_weights(config, path)
        return _opened("weights", path, path, encoder, preset_of(config), config)
    if tf.io.gfile.exists(path + ".index"):
        _needs_config(path, "a checkpoint", config)
        encoder = _from_checkpoint(config, path)
        return _opened(
            "checkpoint", path, os.path.basename(path), encoder, preset_of(config), config
        )
    if os.path.isfile(path):
        raise UserError(
            f"{path} is a file of a kind this loader does not read (by its name); expected "
            f"{_EXPECTED}. Keras weights must end in '.weights.h5', models in '.keras'."
        )
    raise FileNotFoundError(f"{path} does not exist; expected {_EXPECTED}.")


def _open_export(path):
    export_dir = resolve_export_dir(path)
    info = read_export_config(export_dir)
    saved = tf.saved_model.load(export_dir)
    outputs = tuple(k for k in info["outputs"] if k != "global")
    return Loaded(
        kind="savedmodel",
        path=path,
        image_size=int(info["image_size"]),
        preset=info["preset"],
        feature_names=outputs,
        description=f"SavedModel {export_dir} ({info['class']}, preset {info['preset']})",
        source=export_dir,
        saved_model=saved,
    )


def load_encoder(
    path, include_preprocessing=True, which="latest", config=None, features=(GLOBAL,)
) -> keras.Model:
    """The pretrained encoder at `path` as a trainable `keras.Model` (see the module docstring).

    Args:
        path: a work directory (config.json and the checkpoint chosen by `which`), a
            `.keras` file written by `save_encoder` (or `encoder.save`), or with `config`
            a `.weights.h5` file / a checkpoint prefix or directory.
        include_preprocessing: True (the default): a `PixelEncoder` taking pixels
            0..255 (uint8 or float) of any size and returning "r1" [B, D] (plus
            `features`), the contract of every exported encoder; False: the bare
            encoder, taking normalised views at its size and returning every feature map.
        which: "latest" or "best" checkpoint of a work directory.
        config: the run config (ml_collections) for sources that hold none.
        features: with include_preprocessing, the outputs besides "r1" (e.g. ("r1",
            "r5")); the encoder's variables none of them uses are frozen.

    Returns:
        a built keras.Model returning a dict of named features.
    """
    loaded = open_encoder(path, which, config)
    if loaded.encoder is None:
        raise UserError(
            f"{path} is a SavedModel export (for serving), not a Keras model to build "
            "on; load_encoder takes the run's work directory or a .keras file "
            "(amdim_tf.save_encoder); read the export's features with "
            "amdim_tf.run.loader.open_encoder, or wrap it in keras.layers.TFSMLayer."
        )
    if not include_preprocessing:
        return loaded.encoder
    if tuple(features) == (GLOBAL,):
        return loaded.keras_model
    model = PixelEncoder(loaded.encoder, loaded.preset, features, name="pixel_encoder")
    model.build((None, loaded.image_size, loaded.image_size, 3))
    return model


def save_encoder(source, out, which="latest", config=None, overwrite=False) -> str:
    """Writes the encoder of `source` as a `.keras` file, normalisation included.

    Args:
        source: anything `load_encoder` takes, or an encoder (keras.Model) itself.
        out: path ending in ".keras".
        which, config: as for `load_encoder`.
        The file holds a `PixelEncoder` (pixels 0..255 in, "r1" [B, D] out).
        overwrite: replace an existing file.

    Returns:
        out. `load_encoder(out)` gives the pixel model back,
        `load_encoder(out, include_preprocessing=False)` the bare encoder.
    """
    if not str(out).endswith(".keras"):
        raise UserError(f"out={out!r} must end in '.keras' (the Keras model file format).")
    if os.path.exists(out) and not overwrite:
        raise OutputExistsError(f"{out} already exists; pick another name or pass overwrite=True.")
    if isinstance(source, PixelEncoder):
        model = source
    elif isinstance(source, keras.Model):
        model = PixelEncoder(source, name="pixel_encoder")
    else:
        model = load_encoder(source, include_preprocessing=True, which=which, config=config)
    model.build((None, model.image_size, model.image_size, 3))
    save_keras_atomic(model, out)
    return out


def save_keras_atomic(model: keras.Model, out: str) -> None:
    """`model.save(out)` through a stage beside `out` (`durable.atomic_path`), so a killed
    save never leaves a cut `.keras` file under the real name."""
    with durable.atomic_path(out, f"the Keras model {os.path.basename(out)}") as stage:
        model.save(stage)
