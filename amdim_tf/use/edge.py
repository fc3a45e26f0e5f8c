"""The encoder for non-TensorFlow runtimes: LiteRT and ONNX files checked against the SavedModel.

Beside a SavedModel version written by `export.export_encoder`, this module writes

    export_dir/encoder.tflite        "litert"       LiteRT flatbuffer, float32 weights
    export_dir/encoder_int8.tflite   "litert_int8"  LiteRT, int8 post-training quantisation
    export_dir/encoder_int8w.tflite  "litert_int8w" LiteRT, int8 weights, float activations
    export_dir/encoder.onnx          "onnx"         ONNX (tf2onnx, opset ONNX_OPSET)

each with the input contract of the SavedModel's `serving_default` at the encoder's
size (`images`: uint8 [B, S, S, 3], raw pixels 0..255; the training normalisation runs
inside) and its named outputs: "r1" [B, 1, 1, D], plus "r5" / "r7" on request (Bachman
et al. 2019, Sec. 3.5). An image of another size is refused, the same rule for both
formats, by the file's own runtime (ONNX's fixed input shape, LiteRT's `_only_size`) and
with one line by `runner`; resizing stays the SavedModel's (its evaluation view is a
bicubic resize, which LiteRT's builtin ops do not have). Each file's check at export
time includes that refusal.

Conversion uses the maintained converters only, no graph surgery: the graph is the same
function the SavedModel serves (minus its shape asserts and empty-batch branch, which
LiteRT and ONNX express with their own static shapes), written as a SavedModel and given
to `tf.lite.TFLiteConverter.from_saved_model`, and traced by `tf2onnx.convert.from_function`.
What works with TensorFlow 2.21 / Keras 3.15 (tf2onnx 1.17, onnxruntime 1.32,
ai-edge-litert 2.3, measured on this project's encoders):
- `TFLiteConverter.from_concrete_functions([fn], encoder)` converts without error but
  keeps Keras 3's variables as resource variables: `ai-edge-litert` then returns NaN
  everywhere with its default XNNPACK delegate, and without it fails with
  "READ_VARIABLE failed to invoke". `from_saved_model` freezes them: hence the detour.
- int8 (`Optimize.DEFAULT` + representative dataset, TF 2.21) breaks the 500-step
  CIFAR-10 parity encoder: r1 max_rel 0.99-1.08 against the SavedModel, so its check
  refuses it; the tiny test encoders quantise within 2%.
- tf2onnx cannot take a restored SavedModel signature ("'_WrapperFunction' object has
  no attribute 'get_concrete_function'"), so it traces the in-memory function.

Every file is checked when it is written: the same batch of real images goes through
the SavedModel on disk (its `serving_default`) and through the new file in its own
runtime (LiteRT interpreter, onnxruntime); for each output, max_abs = max |new - saved|
and max_rel = max_abs / max |saved| (relative to the output's scale: an element-wise
ratio explodes on features near 0). A file whose max_rel exceeds the tolerance of its
format (TOLERANCES), or with a non-finite value, is refused with the numbers
(`EdgeCheckError`), and the previous file stays. Every format asked for is tried: a
refused one (by its check or its converter) does not stop the others, and the refused
ones are named together, with why, once all were tried (`EdgeRefusedError`). The numbers, the file's size and sha256
go into the export's amdim_encoder.json under "edge".

A file appears whole or not at all: it is written and checked in a hidden staging
file beside it (`durable.atomic_path`), then renamed into place; the
metadata is rewritten atomically after the rename, with the sha256 that says which file
its numbers belong to.

The converters are optional (`pip install 'amdim-tf[edge]'`); a missing one raises
`MissingConverterError`, one line naming the package.
"""

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from amdim_tf import durable
from amdim_tf.data import samples
from amdim_tf.data.pixel_scale import to_unit
from amdim_tf.errors import OutputExistsError, UserError, first_line
from amdim_tf.methods import amdim
from amdim_tf.run import loader
from amdim_tf.use import export

FORMATS = ("savedmodel", "litert", "litert_int8", "litert_int8w", "onnx")
EDGE_FORMATS = FORMATS[1:]
FILENAMES = {
    "litert": "encoder.tflite",
    "litert_int8": "encoder_int8.tflite",
    "litert_int8w": "encoder_int8w.tflite",
    "onnx": "encoder.onnx",
}
# Largest accepted max_rel (see the module docstring). Float formats reorder float32
# sums (fused kernels, other BLAS) and land near 1e-6; int8 rounds every activation
# to 1/255 of its calibrated range, so its features move by a few percent; int8
# weights alone (float activations) round each weight to 1/255 of its channel's range.
TOLERANCES = {"litert": 1e-4, "onnx": 1e-4, "litert_int8": 0.25, "litert_int8w": 0.1}
LITERT_FORMATS = ("litert", "litert_int8", "litert_int8w")
ONNX_OPSET = 17  # onnxruntime 1.32 runs 7..23; 17 is what most runtimes in use accept
FEATURES = amdim.FEATURES
_PACKAGES = {
    "tf2onnx": "tf2onnx",
    "onnxruntime": "onnxruntime",
    "ai_edge_litert": "ai-edge-litert",
}


class MissingConverterError(UserError, ImportError):
    """An optional converter or runtime is not installed (the message names the package)."""


class EdgeCheckError(UserError):
    """A converted file's outputs differ from the SavedModel's by more than the tolerance."""


class ConversionError(ValueError):
    """A converter could not convert the encoder to a format (the message says why)."""


class EdgeRefusedError(EdgeCheckError):
    """Some formats were refused (their check or conversion failed) after every format
    was tried; `written` holds the metadata of the files written, `refused` {format:
    why}."""

    def __init__(self, written: dict, refused: dict):
        self.written, self.refused = written, refused
        whys = "; ".join(f"{fmt}: {why}" for fmt, why in refused.items())
        kept = f"; written and checked: {', '.join(written)}" if written else ""
        super().__init__(f"refused {', '.join(refused)} ({whys}){kept}.")


def require(module: str, fmt: str):
    """`import module`, or MissingConverterError naming the pip package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = _PACKAGES.get(module, module)
        raise MissingConverterError(
            f"--format={fmt} needs the package {package!r}, which is not installed; "
            f"install it with: pip install 'amdim-tf[edge]' (or pip install {package})"
        ) from None


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """ "savedmodel,litert" (or a list) -> ["savedmodel", "litert"], unknown names refused."""
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    names = [f for f in names if f]
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise UserError(
            f"format {','.join(bad) or repr(formats)} is unknown; use one or more of "
            f"{','.join(FORMATS)}, comma separated."
        )
    return list(dict.fromkeys(names))


def parse_features(features: str | Iterable[str], outputs: Iterable[str]) -> list[str]:
    """ "r1,r5" (or a list) -> ["r1", "r5"]: the outputs of the LiteRT / ONNX files,
    "r1" plus any of the encoder's `outputs`; anything else refused in one line (before
    any file is written: amdim-export checks them first)."""
    if isinstance(features, str):
        features = features.split(",")
    features = [f.strip() for f in features if f.strip()]
    outputs = list(outputs)
    if "r1" not in features or any(k not in outputs for k in features):
        raise UserError(
            f"features {','.join(features)}: use r1 plus any of "
            f"{','.join(k for k in outputs if k in FEATURES and k != 'r1')} "
            "(the encoder's outputs)."
        )
    return features


def interpreter_class():
    """The LiteRT interpreter: `ai_edge_litert`'s, else TensorFlow's deprecated copy."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = getattr(tf.lite, "Interpreter", None)
        if Interpreter is None:
            require("ai_edge_litert", "litert")
    return Interpreter


def _only_size(images, size):
    """`images` [B, H, W, 3] as [B, size, size, 3], through two reshapes that fail in
    every runtime unless H == W == size: the first keeps B*H*W*3 elements only if
    H == size, the second only if then W == size. LiteRT resizes its input to whatever
    it is given and has no assert op: without them an image of another size went
    through the convolutions and came out a feature map [1, h, w, D] instead of r1,
    without an error. (With H and W fixed in the input's spec the converter folds
    them into constants and the check away, hence LITERT's spec leaves them open.)"""
    shape = tf.shape(images)
    rows = tf.reshape(images, tf.stack([shape[0], size, shape[2] * 3]))  # [B, S, W*3]
    # The cast between the reshapes keeps the converters from merging them into one.
    pixels = to_unit(rows)  # [B, S, W*3] in [0, 1]
    return tf.reshape(pixels, tf.stack([shape[0], size, size, 3]))  # [B, S, S, 3]


def _edge_function(encoder, preset, image_size, features, fixed_size=True):
    """images uint8 [B, S, S, 3] -> {feature: map}: serving_default's graph at the
    encoder's size S, without the SavedModel's checks. Another size is refused by the
    runtime: by ONNX's fixed input shape (`fixed_size`), by LiteRT's `_only_size`."""

    def encode(images):  # [B, S, S, 3] uint8
        pixels = _only_size(images, image_size)  # [B, S, S, 3] in [0, 1]
        out = encoder(export.normalise(pixels, preset), training=False)
        return {k: out[k] for k in features}

    side = image_size if fixed_size else None
    spec = tf.TensorSpec([None, side, side, 3], tf.uint8, name="images")
    return tf.function(encode, input_signature=[spec]), spec


def _to_litert(encoder, fn, spec, work, quantise=None, representative=None):
    path = os.path.join(work, "savedmodel")
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_endpoint("serving_default", fn, [spec])
    archive.write_out(path, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(path)
    if quantise == "int8":
        # Post-training quantisation (weights and activations int8, ranges calibrated on
        # `representative`); the uint8 input and float32 outputs keep the contract.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            {"images": image[None]} for image in representative
        )
    elif quantise == "weights":
        # Dynamic-range quantisation: int8 weights (a quarter of the size), activations
        # in float32 (no calibration data; kernels dequantise or quantise on the fly).
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return converter.convert()
    except Exception as e:  # ConverterError names the op it could not convert
        raise ConversionError(f"LiteRT conversion failed: {first_line(e)}") from e


def _to_onnx(fn, spec, opset):
    tf2onnx = require("tf2onnx", "onnx")
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=opset)
    except Exception as e:
        raise ConversionError(
            f"ONNX conversion (tf2onnx, opset {opset}) failed: {first_line(e)}"
        ) from e
    return proto.SerializeToString()


def _runtime(path, num_threads=None):
    """(run, side): images uint8 -> {output: array} in the file's own runtime, unchecked,
    and the image side S the file takes (None when it cannot tell)."""
    if path.endswith(".tflite"):
        interpreter = interpreter_class()(model_path=path, num_threads=num_threads)
        run = interpreter.get_signature_runner("serving_default")
        try:  # LiteRT's input leaves H and W open (`_only_size`): the export says S
            side = int(loader.read_export_config(os.path.dirname(path))["image_size"])
        except (OSError, ValueError, KeyError):
            side = None
        return (lambda images: run(images=np.asarray(images, np.uint8))), side
    if path.endswith(".onnx"):
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        side = session.get_inputs()[0].shape[1]
        return (
            lambda images: dict(
                zip(names, session.run(None, {"images": np.asarray(images, np.uint8)}), strict=True)
            ),
            side if isinstance(side, int) else None,
        )
    raise UserError(f"{path} is neither a .tflite nor an .onnx file.")


def runner(path: str, num_threads: int | None = None) -> Callable[[np.ndarray], dict]:
    """images uint8 [B, S, S, 3] -> {output: array} for a .tflite or .onnx file.

    Images of another size or dtype are refused with one line (the files themselves
    refuse another size too, with their runtime's message: `_only_size`); resizing is
    the SavedModel's (`serving_default` takes any size)."""
    run, side = _runtime(path, num_threads)
    name = os.path.basename(path)

    def checked(images):
        images = np.asarray(images)
        want = (side, side, 3) if side else images.shape[1:]
        if images.ndim != 4 or images.shape[1:] != want or images.dtype != np.uint8:
            s = side or "S"
            raise UserError(
                f"{name} takes uint8 images [B, {s}, {s}, 3] (raw pixels at the encoder's "
                f"size), received {images.dtype} {list(images.shape)}; resize them to "
                f"{s}x{s} first (the SavedModel's serving_default takes any size)."
            )
        return run(images)

    return checked


def run_batched(run: Callable, images: np.ndarray, batch: int = 64) -> dict:
    parts = [run(images[i : i + batch]) for i in range(0, len(images), batch)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def saved_model_outputs(export_dir: str, images: np.ndarray, batch: int = 64) -> dict:
    """The SavedModel's serving_default on uint8 `images` (the reference of every check)."""
    serve = loader.open_encoder(export_dir).saved_model.signatures["serving_default"]
    return run_batched(
        lambda x: {k: v.numpy() for k, v in serve(images=tf.constant(x)).items()}, images, batch
    )


def compare(got: dict, expected: dict) -> dict:
    """{output: {"max_abs", "max_rel"}} of `got` against `expected`, for got's outputs."""
    diffs = {}
    for k in sorted(got):
        a, b = np.asarray(got[k], np.float64), np.asarray(expected[k], np.float64)
        if a.shape != b.shape:
            raise EdgeCheckError(f"output {k} has shape {a.shape}, the SavedModel's {b.shape}.")
        max_abs = float(np.max(np.abs(a - b))) if np.all(np.isfinite(a)) else float("inf")
        diffs[k] = {"max_abs": max_abs, "max_rel": max_abs / max(float(np.max(np.abs(b))), 1e-12)}
    return diffs


def check_file(
    path: str, export_dir: str, images: np.ndarray, tolerance: float, expected: dict | None = None
) -> dict:
    """compare() of the file at `path` with the SavedModel at `export_dir` on `images`
    (`expected`: its outputs, when already computed); EdgeCheckError quoting the numbers
    when an output's max_rel exceeds `tolerance`."""
    got = run_batched(runner(path), images)
    if expected is None:
        expected = saved_model_outputs(export_dir, images)
    diffs = compare(got, expected)
    _check_refuses_other_sizes(path, images.shape[1])
    bad = {k: d for k, d in diffs.items() if not d["max_rel"] <= tolerance}
    if bad:
        numbers = "; ".join(
            f"{k} max_abs {d['max_abs']:.3g} max_rel {d['max_rel']:.3g}" for k, d in bad.items()
        )
        raise EdgeCheckError(
            f"{os.path.basename(path)} differs from the SavedModel on {len(images)} images "
            f"({numbers}) beyond the tolerance max_rel {tolerance:g}; not written."
        )
    return diffs


def _check_refuses_other_sizes(path, side):
    """EdgeCheckError unless the file's own runtime refuses images of another size than
    S: a larger square (as many pixels as 4 images) and a strip of S*S pixels (as many
    as one), which a check of element counts alone would let through."""
    run, _ = _runtime(path)
    for shape in ((1, 2 * side, 2 * side, 3), (1, side // 2, 2 * side, 3)):
        try:
            out = run(np.zeros(shape, np.uint8))
        except Exception:  # each runtime raises its own kind: all mean refused
            continue
        shapes = ", ".join(f"{k} {list(np.shape(v))}" for k, v in sorted(out.items()))
        raise EdgeCheckError(
            f"{os.path.basename(path)} takes an image of {shape[1]}x{shape[2]} px, not its "
            f"{side}x{side}, and returns {shapes} instead of refusing it; not written."
        )


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_edge(
    encoder: keras.Model,
    export_dir: str,
    formats: Sequence[str],
    images: np.ndarray,
    representative: np.ndarray | None = None,
    features: Sequence[str] = ("r1",),
    tolerances: dict | None = None,
    overwrite: bool = False,
    onnx_opset: int = ONNX_OPSET,
    on_written: Callable[[str, dict], None] | None = None,
) -> dict:
    """Writes and checks the `formats` (of EDGE_FORMATS) of `encoder` beside its SavedModel.

    Args:
        encoder: the encoder the SavedModel at `export_dir` was exported from.
        export_dir: a complete SavedModel version (`export.export_encoder`); its
            amdim_encoder.json gives the preset and image size, and receives the checks.
        formats: any of "litert", "litert_int8", "litert_int8w", "onnx".
        images: uint8 [N, S, S, 3] real images for the check (a few dozen suffice).
        representative: uint8 [M, S, S, 3] images of the training source, calibrating
            the int8 ranges; required for "litert_int8".
        features: outputs to export, "r1" and any of "r5", "r7".
        tolerances: per-format max_rel overriding TOLERANCES.
        overwrite: replace an existing file of a format (the default refuses).
        onnx_opset: ONNX opset of the "onnx" file.
        on_written: called with (format, metadata) as each file is written and checked.

    Returns:
        {format: metadata} as stored in amdim_encoder.json under "edge".

    Raises:
        EdgeRefusedError: after every format was tried, when some were refused (their
            check or their conversion failed), naming each and why; the others are
            written and recorded, and a refused format's previous file stays.
    """
    formats = [f for f in parse_formats(formats) if f != "savedmodel"]
    config = loader.read_export_config(export_dir)
    export_dir = loader.resolve_export_dir(export_dir)
    features = parse_features(features, config["outputs"])
    images = np.asarray(images)
    size = config["image_size"]
    if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3) or not len(images):
        raise UserError(
            f"check images are {images.dtype} {list(images.shape)}; pass uint8 "
            f"[N, {size}, {size}, 3] raw pixels with N > 0."
        )
    if "litert_int8" in formats and (representative is None or not len(representative)):
        raise UserError(
            "litert_int8 needs representative images (uint8 [M, S, S, 3] from the "
            "training source) to calibrate its int8 ranges."
        )
    # Every converter is looked up before any file is written.
    if "onnx" in formats:
        require("tf2onnx", "onnx")
        require("onnxruntime", "onnx")
    if set(LITERT_FORMATS) & set(formats):
        interpreter_class()
    tolerances = {**TOLERANCES, **(tolerances or {})}
    for fmt in formats:
        target = os.path.join(export_dir, FILENAMES[fmt])
        if os.path.exists(target) and not overwrite:
            raise OutputExistsError(
                f"{target} already exists; pass overwrite=True (--overwrite) to replace it."
            )

    onnx_fn = _edge_function(encoder, config["preset"], size, features)
    litert_fn = _edge_function(encoder, config["preset"], size, features, fixed_size=False)
    expected = saved_model_outputs(export_dir, images)
    functions = {"onnx": onnx_fn, **dict.fromkeys(LITERT_FORMATS, litert_fn)}
    results, refused = {}, {}
    for fmt in formats:  # every format is tried; the refused ones are named at the end
        try:
            results[fmt] = _write_checked(
                encoder, fmt, functions[fmt], export_dir, images, expected, representative,
                features, tolerances[fmt], onnx_opset,
            )  # fmt: skip
        except (EdgeCheckError, ConversionError) as e:
            refused[fmt] = first_line(e)
            continue
        _record(export_dir, {fmt: results[fmt]})
        if on_written is not None:
            on_written(fmt, results[fmt])
    if refused:
        raise EdgeRefusedError(results, refused)
    return results


def _write_checked(
    encoder, fmt, function, export_dir, images, expected, representative, features,
    tolerance, onnx_opset,
):  # fmt: skip
    """Converts `fmt`, checks the file staged beside its target and renames it into place
    (a killed export leaves a hidden stage only, which the next write of the target
    removes); its metadata."""
    target = os.path.join(export_dir, FILENAMES[fmt])
    with durable.atomic_path(target, f"the {fmt} file") as staged:
        if fmt == "onnx":
            content = _to_onnx(*function, onnx_opset)
            converter = f"tf2onnx {require('tf2onnx', fmt).__version__}, opset {onnx_opset}"
        else:
            quantise = {"litert_int8": "int8", "litert_int8w": "weights"}.get(fmt)
            with durable.scratch_dir(target) as work:
                content = _to_litert(encoder, *function, work, quantise, representative)
            converter = f"tf.lite.TFLiteConverter (tensorflow {tf.__version__})"
        with open(staged, "wb") as f:
            f.write(content)
        diffs = check_file(staged, export_dir, images, tolerance, expected)
        meta = {
            "file": FILENAMES[fmt],
            "bytes": os.path.getsize(staged),
            "sha256": _sha256(staged),
            "converter": converter,
            "outputs": features,
            "input": "images uint8 [B,S,S,3] 0..255",
            "check": {"images": len(images), "tolerance_max_rel": tolerance, **diffs},
        }
        if fmt == "litert_int8":
            meta["representative_images"] = len(representative)
    return meta


def export_edge_for_data(
    encoder: keras.Model,
    export_dir: str,
    formats: Sequence[str],
    data,
    check_images: int = 64,
    representative_images: int = 256,
    features: Sequence[str] = ("r1",),
    overwrite: bool = False,
    report: Callable[[str], None] | None = None,
) -> list[str]:
    """`export_edge` with its images drawn from a config's `data` section: `check_images`
    of the eval split for the checks, `representative_images` of the train split to
    calibrate litert_int8. Returns one printable line per file written (what amdim-export
    and the demo print), each also given to `report` as soon as its file is checked, so
    that the lines of the files written are out before an `EdgeRefusedError` names the
    refused formats."""
    images, _ = samples.eval_pixels(data, data.eval_split, check_images, seed=0, uint8=True)
    representative = None
    if "litert_int8" in formats:
        representative, _ = samples.eval_pixels(
            data, data.train_split, representative_images, seed=1, uint8=True
        )
    lines = []

    def written(fmt, meta):
        lines.append(check_line(export_dir, fmt, meta))
        if report is not None:
            report(lines[-1])

    try:
        export_edge(
            encoder, export_dir, formats, images, representative=representative,
            features=features, overwrite=overwrite, on_written=written,
        )  # fmt: skip
    except FileExistsError as e:  # a user error: one line, as for the SavedModel
        raise UserError(str(e)) from None
    return lines


def check_line(export_dir: str, fmt: str, meta: dict) -> str:
    """One printable line of a written file: its path, size and check numbers."""
    check = meta["check"]
    diffs = ", ".join(
        f"{k} max_abs {check[k]['max_abs']:.2g} max_rel {check[k]['max_rel']:.2g}"
        for k in meta["outputs"]
    )
    return (
        f"{fmt}: {os.path.join(export_dir, meta['file'])} ({meta['bytes'] / 1e6:.2f} MB); "
        f"checked on {check['images']} images against the SavedModel: {diffs} "
        f"(tolerance max_rel {check['tolerance_max_rel']:g})"
    )


def _record(export_dir, entries):
    """Merges `entries` into amdim_encoder.json's "edge" (atomically rewritten)."""
    path = os.path.join(export_dir, loader.EXPORT_CONFIG_FILE)
    with open(path) as f:
        config = json.load(f)
    config.setdefault("edge", {}).update(entries)
    durable.write_json(path, config)


def edge_files(export_dir: str) -> dict:
    """{format: metadata} of the checked files of a SavedModel version, with their paths;
    a file changed after its check (sha256 differs) is left out."""
    export_dir = loader.resolve_export_dir(export_dir)
    found = {}
    for fmt, meta in loader.read_export_config(export_dir).get("edge", {}).items():
        path = os.path.join(export_dir, meta["file"])
        if os.path.isfile(path) and _sha256(path) == meta["sha256"]:
            found[fmt] = {**meta, "path": path}
    return found
