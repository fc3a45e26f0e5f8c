"""Input pipelines: every data source into the same AMDIM two-view batches.

AMDIM (Bachman et al. 2019, Sec. 3.1) pretrains on two augmented views of each image and
evaluates frozen features on labelled splits. The official code (amdim-public,
`datasets.py: build_dataset`) pretrains STL-10 on `train+unlabeled` and evaluates on
`train`/`test`; we follow that here for every source:

- `make_pretrain_dataset` yields `((view1, view2), label)` forever, label -1 for unlabeled
  examples (STL-10's `unlabeled` split, an unlabeled image folder);
- `make_eval_dataset` yields `(image, label)` once over the labelled examples of a split,
  optionally a seeded uniform or class-balanced sample of them.

This file owns reading, validating and decoding every source, and the order, sharding,
caching and seeding of the examples; the augmentations themselves live in `augment.py`
and every default of the `data` config section in `config_lib.base_config()`.

Sources (`data.source`), one class each in `SOURCES`, all configured by the `data`
section:

- "npz": the project's encoded-array file (`S_jpeg`, `S_offsets`, `S_labels`,
  `class_names`, see ../shared/data/README.md), `data.path` is the file. Its arrays are
  checked when loaded (shapes, dtypes, offsets, label range).
- "digits": scikit-learn's 8x8 digits upscaled to 32x32 RGB; offline demo data. The first
  1,440 images are "train", the remaining 357 "test".
- "folder": `data.path/class_x/*.{jpg,jpeg,png,bmp,gif}` (labels are sorted class dirs),
  or `data.path/<split>/class_x/...` when such a split dir exists; plus an optional flat
  folder of unlabeled images, `data.unlabeled_path`, used for pretraining only. File
  names are handled as bytes, so names that are not UTF-8 are read like any other.
- "tfrecord": `tf.train.Example`s with `image/encoded` and `image/class/label` (the
  Model Garden / SimCLR layout); `data.path` is a glob, in which `{split}` is replaced by
  the split name (e.g. `/data/imagenet/{split}-*`). Labels are used as stored.
- "tfds": `tfds.builder(data.name, data_dir=data.path or None)`. Nothing is ever
  downloaded here: prepare the dataset first on a machine with internet
  (`tfds build cifar10 --data_dir=...`). `imagenet2012` needs a manual download, as
  TFDS documents: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in
  `<data_dir>/downloads/manual/` then run `tfds build imagenet2012`. `places365_small`
  downloads itself but is large: build it with `tfds build places365_small` ahead of
  time on a machine with internet and copy the data_dir. For datasets with an
  `unlabeled` split (stl10) pretraining adds it to `data.train_split`.

Bad data never stops a run halfway: the npz, folder and tfrecord sources decode every
example once up front (memoised per process) and skip the ones that do not decode, with a
warning naming the first few (`data.strict=True` raises instead, naming the first).
Grayscale/RGBA become RGB. Decoded images are bounded to `MAX_DECODE_SIDE` pixels on the
longer side (JPEGs are decoded at a reduced DCT scale, then anything larger is resized
with antialiasing), so the decoded-image cache stays small whatever the file sizes;
smaller images decode exactly as stored, and the augmentation resizes them.

Splits may be joined with "+" ("train+unlabeled"); a part named "unlabeled" gets label -1.
Every example's augmentation seed is derived from (seed, example index, epoch), so a fixed
seed reproduces each batch exactly, with or without caching and parallelism.
"""

import dataclasses
import functools
import os
import time
from collections.abc import Callable

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from amdim_tf.data import augment

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
UNLABELED = -1
UNLABELED_SPLIT = "unlabeled"
# Longest decoded image side: 4x the largest preset view (128 px), so random crops still
# see detail, while 8 cached images of any size take 8 * 512 * 512 * 3 bytes, not GBs.
MAX_DECODE_SIDE = 512

# Digits has no official split; the first 80% (1,440 of 1,797) are a stable "train".
_DIGITS_TRAIN = 1440
# Datasets whose pretraining set, like the paper's STL-10 runs, adds an unlabeled split.
_TFDS_WITH_UNLABELED = ("stl10",)
# Class counts for tfrecord copies of well-known datasets, so no full scan is needed.
_KNOWN_NUM_CLASSES = {
    "cifar10": 10,
    "cifar100": 100,
    "stl10": 10,
    "imagenet2012": 1000,
    "places365_small": 365,
    "digits": 10,
}
_MAX_LOGGED_BAD = 5

Data = ml_collections.ConfigDict  # the `data` section of a run config


@dataclasses.dataclass
class _Examples:
    """A finite, fixed-order dataset of (payload, label int32) and how to decode it."""

    ds: tf.data.Dataset
    # payload -> uint8 [H, W, 3]; payloads are encoded bytes, file paths or images.
    decode: Callable


def _preset(data):
    image_size = int(data.image_size)
    preset = data.augment or augment.preset_for_size(image_size)
    if augment.preset_size(preset) != image_size:
        raise ValueError(
            f"data.augment={preset!r} produces {augment.preset_size(preset)}-pixel views "
            f"but data.image_size={image_size}; set data.augment='' to pick the preset "
            "for the image size, or make the two agree."
        )
    return preset


def split_parts(split: str) -> list:
    """The parts of a split expression: "train+unlabeled" -> ["train", "unlabeled"]."""
    parts = [p.strip() for p in str(split).split("+") if p.strip()]
    if not parts:
        raise ValueError(f"Empty split {split!r}; use e.g. 'train' or 'train+unlabeled'.")
    return parts


def _is_unlabeled(part):
    return part.split("[")[0] == UNLABELED_SPLIT


def _require_path(path, key):
    if not path:
        raise FileNotFoundError(f"No data path given; set {key}.")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist; fix {key}.")


# -- decoding --------------------------------------------------------------------------


def _to_rgb(image):
    """uint8 [H, W, C] with C in 1..4 -> [H, W, 3] (gray is tiled, alpha dropped)."""
    channels = tf.shape(image)[-1]
    gray = lambda: tf.tile(image[..., :1], [1, 1, 3])
    rgb = lambda: image[..., :3]
    out = tf.cond(channels < 3, gray, rgb)
    return tf.ensure_shape(out, [None, None, 3])


def _bound_size(image):
    """uint8 [H, W, 3] -> longer side at most MAX_DECODE_SIDE; smaller images unchanged."""
    hw = tf.shape(image)[:2]
    side = tf.reduce_max(hw)

    def shrink():
        scale = MAX_DECODE_SIDE / tf.cast(side, tf.float32)
        size = tf.maximum(1, tf.cast(tf.round(tf.cast(hw, tf.float32) * scale), tf.int32))
        # Antialiasing averages the pixels a plain bilinear resize would skip.
        out = tf.image.resize(image, size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

    return tf.cond(side > MAX_DECODE_SIDE, shrink, lambda: image)


def _decode_jpeg(contents):
    # A big JPEG is decoded at 1/2, 1/4 or 1/8 scale in libjpeg's DCT (cheap, and never
    # at full size in memory): the largest reduction that still leaves a longer side of
    # MAX_DECODE_SIDE or more. Up to 2 * MAX_DECODE_SIDE the full-scale decode is used,
    # which INTEGER_ACCURATE makes match PIL bit for bit (see ../shared/data/README.md).
    side = tf.reduce_max(tf.image.extract_jpeg_shape(contents)[:2])
    thresholds = tf.constant([2, 4, 8], tf.int32) * MAX_DECODE_SIDE
    branch = tf.reduce_sum(tf.cast(side >= thresholds, tf.int32))

    def at(ratio):
        return lambda: tf.io.decode_jpeg(
            contents, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE"
        )

    return tf.switch_case(branch, [at(1), at(2), at(4), at(8)])


def _decode_image(contents):
    """Any supported encoding -> uint8 [H, W, 3], longer side <= MAX_DECODE_SIDE."""

    def other():
        image = tf.io.decode_image(contents, dtype=tf.uint8, expand_animations=False)
        return _to_rgb(image)

    image = tf.cond(tf.io.is_jpeg(contents), lambda: _decode_jpeg(contents), other)
    return tf.ensure_shape(_bound_size(tf.ensure_shape(image, [None, None, 3])), [None, None, 3])


def _decode_file(path):
    return _decode_image(tf.io.read_file(path))


def _decoded_image(image):
    """An already decoded image (tfds) -> uint8 [H, W, 3], longer side bounded."""
    return _bound_size(_to_rgb(image))


def _decodable(ds, decode):
    """`ds` of (key, payload) -> the set of keys whose payload decodes to a non-empty image.

    A parallel tf.data pass: a payload that fails to decode here would fail in training,
    where one bad JPEG in a million would stop the run, at the same step on every resume.
    """
    probe = ds.map(lambda k, p: (k, tf.shape(decode(p))), num_parallel_calls=AUTOTUNE)
    probe = probe.ignore_errors().batch(1024)
    good = set()
    for keys, shapes in probe.as_numpy_iterator():
        good.update(keys[np.min(shapes[:, :2], axis=1) > 0].tolist())
    return good


def _why_undecodable(decode, payload):
    try:
        decode(tf.constant(payload)).numpy()
        return "it decodes to an empty image"
    except tf.errors.OpError as e:
        return e.message.splitlines()[0]


def _report_bad(bad, total, what, where, strict, why, num_bad=None):
    """Raises on the first bad item under `strict`, else logs the first few.

    bad: names of the bad items (at least the first few); num_bad: how many there are
    (default len(bad)); why(): the reason the first one fails.
    """
    num_bad = len(bad) if num_bad is None else num_bad
    if bad and strict:
        raise ValueError(
            f"Cannot decode {what} {bad[0]} ({why()}); {num_bad} bad {what}(s) {where}. "
            "Remove or fix them, or set data.strict=False to skip them."
        )
    if bad:
        logging.warning(
            "Skipping %d of %d %ss %s that do not decode; first: %s",
            num_bad,
            total,
            what,
            where,
            ", ".join(str(b) for b in bad[:_MAX_LOGGED_BAD]),
        )


class Source:
    """A data source: the examples, labels and counts of each split part, and classes.

    Subclasses read their settings from the `data` config section given here.
    """

    def __init__(self, data: Data):
        self.data = data

    def examples(self, part: str) -> _Examples:
        """The examples of one split part, in a fixed order."""
        raise NotImplementedError

    def labels(self, part: str) -> np.ndarray:
        """int32 [count(part)]: the labels of `examples(part)`, read without decoding."""
        raise NotImplementedError

    def count(self, part: str) -> int:
        return len(self.labels(part))

    def num_classes(self) -> int:
        raise NotImplementedError

    def has_unlabeled(self) -> bool:
        """Whether pretraining adds an unlabeled part to data.train_split."""
        return False

    def pretrain_parts(self, parts: list) -> list:
        if not any(_is_unlabeled(p) for p in parts) and self.has_unlabeled():
            return [*parts, UNLABELED_SPLIT]
        return parts


# -- npz -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NpzData:
    """The encoded-array format: per split, JPEG bytes and labels, plus class names."""

    splits: dict  # name -> (encoded: object array of bytes [N], labels: int32 [N])
    class_names: tuple


def _check_npz_split(path, name, blob, offsets, labels, num_names):
    """One-line errors for arrays that would otherwise fail deep inside TF."""
    where = f"{path!r}: {name}"
    if blob.ndim != 1 or blob.dtype != np.uint8:
        raise ValueError(
            f"{where}_jpeg is a {blob.ndim}-D {blob.dtype} array; store the JPEG files "
            "concatenated as 1-D uint8 (np.frombuffer(b''.join(jpegs), np.uint8))."
        )
    if offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(
            f"{where}_offsets is a {offsets.ndim}-D {offsets.dtype} array; store 1-D "
            "integer byte offsets (np.cumsum([0] + jpeg_lengths))."
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{where}_labels is a {labels.ndim}-D {labels.dtype} array; store 1-D integer "
            "class indices (-1 for unlabeled)."
        )
    if len(offsets) != len(labels) + 1:
        raise ValueError(
            f"{where}_offsets has {len(offsets)} entries, expected {len(labels) + 1} "
            f"(one more than {name}_labels)."
        )
    offsets = offsets.astype(np.int64)
    drops = np.flatnonzero(np.diff(offsets) < 0)
    if drops.size:
        i = int(drops[0])
        raise ValueError(
            f"{where}_offsets decreases at entry {i} ({offsets[i]} -> {offsets[i + 1]}); "
            f"image i is {name}_jpeg[offsets[i]:offsets[i + 1]], so rebuild the offsets "
            "as np.cumsum([0] + jpeg_lengths)."
        )
    if offsets.size and (offsets[0] < 0 or offsets[-1] > blob.size):
        raise ValueError(
            f"{where}_offsets span {offsets[0]}..{offsets[-1]} but {name}_jpeg has "
            f"{blob.size} bytes; rebuild the offsets as np.cumsum([0] + jpeg_lengths)."
        )
    labels = labels.astype(np.int64)
    limit = num_names if num_names else np.iinfo(np.int32).max
    wrong = np.flatnonzero((labels < UNLABELED) | (labels >= limit))
    if wrong.size:
        i = int(wrong[0])
        expected = f"0..{num_names - 1} (class_names has {num_names})" if num_names else ">= 0"
        raise ValueError(
            f"{where}_labels[{i}] is {labels[i]}; labels must be {expected}, or -1 for "
            "unlabeled. Fix the labels (or class_names)."
        )
    return offsets


@functools.lru_cache(maxsize=4)
def _load_npz_cached(path, mtime):
    del mtime  # Only part of the cache key, so an edited file is re-read.
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != b"PK":  # np.load would call any non-zip file "pickled data"
        raise ValueError(
            f"{path!r} (data.path) is not an npz archive; write one with np.savez holding "
            "<split>_jpeg, <split>_offsets, <split>_labels and class_names arrays (the "
            "format of shared/data/README.md), or pick another data.source."
        )
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        class_names = tuple(str(n) for n in f["class_names"]) if "class_names" in keys else ()
        splits = {}
        for key in sorted(keys):
            if not key.endswith("_jpeg"):
                continue
            name = key[: -len("_jpeg")]
            missing = {f"{name}_offsets", f"{name}_labels"} - keys
            if missing:
                raise ValueError(f"{path!r}: split {name!r} lacks {sorted(missing)}.")
            blob, labels = f[key], f[f"{name}_labels"]
            offsets = _check_npz_split(
                path, name, blob, f[f"{name}_offsets"], labels, len(class_names)
            )
            raw = blob.tobytes()
            encoded = np.array(
                [raw[offsets[i] : offsets[i + 1]] for i in range(len(labels))], dtype=object
            )
            splits[name] = (encoded, labels.astype(np.int32))
    if not splits:
        raise ValueError(f"{path!r} holds no '<split>_jpeg' arrays; is it the npz format?")
    return NpzData(splits=splits, class_names=class_names)


def load_npz(path: str) -> NpzData:
    """Reads and checks the project's encoded-array `.npz` (see ../shared/data/README.md)."""
    _require_path(path, "data.path")
    return _load_npz_cached(os.path.abspath(path), os.path.getmtime(path))


_NPZ_GOOD = {}


class NpzSource(Source):
    """The project's encoded-array file; undecodable records are skipped once, up front."""

    def _split(self, part):
        path = self.data.path
        npz = load_npz(path)
        if part not in npz.splits:
            raise ValueError(
                f"Split {part!r} is not in {path!r}; it has {sorted(npz.splits)}."
                " Fix data.train_split / data.eval_split."
            )
        encoded, labels = npz.splits[part]
        key = (os.path.abspath(path), os.path.getmtime(path), part)
        if key not in _NPZ_GOOD:
            ds = tf.data.Dataset.from_tensor_slices((np.arange(len(labels)), list(encoded)))
            _NPZ_GOOD[key] = _decodable(ds, _decode_image)
        good = _NPZ_GOOD[key]
        if len(good) == len(labels):
            return encoded, labels
        bad = [i for i in range(len(labels)) if i not in good]
        _report_bad(
            bad,
            len(labels),
            "record",
            f"of split {part!r} in {path!r} (data.path)",
            self.data.strict,
            lambda: _why_undecodable(_decode_image, encoded[bad[0]]),
        )
        keep = np.array(sorted(good), dtype=np.int64)
        return encoded[keep], labels[keep]

    def examples(self, part: str) -> _Examples:
        encoded, labels = self._split(part)
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(list(encoded)), labels))
        return _Examples(ds, _decode_image)

    def labels(self, part: str) -> np.ndarray:
        return self._split(part)[1]

    def num_classes(self) -> int:
        npz = load_npz(self.data.path)
        if npz.class_names:
            return len(npz.class_names)
        return int(max(labels.max() for _, labels in npz.splits.values())) + 1


# -- digits ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _load_digits():
    from sklearn.datasets import load_digits  # Only the demo source needs sklearn.

    digits = load_digits()
    # 16 gray levels (0..16) -> uint8, then 8x8 -> 32x32 so CIFAR settings apply as is.
    images = (digits.images.astype(np.float32) * (255.0 / 16.0))[..., None]
    images = tf.image.resize(images, [32, 32], method="bilinear").numpy()
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return np.repeat(images, 3, axis=-1), digits.target.astype(np.int32)


class DigitsSource(Source):
    """scikit-learn's digits at 32x32 RGB: offline demo data, decoded in memory."""

    def _rows(self, part):
        rows = {"train": slice(0, _DIGITS_TRAIN), "test": slice(_DIGITS_TRAIN, None)}
        if part not in rows:
            raise ValueError(
                f"Split {part!r} is not a digits split; use 'train' or 'test' in "
                "data.train_split / data.eval_split."
            )
        return rows[part]

    def examples(self, part: str) -> _Examples:
        images, labels = _load_digits()
        rows = self._rows(part)
        ds = tf.data.Dataset.from_tensor_slices((images[rows], labels[rows]))
        return _Examples(ds, tf.identity)

    def labels(self, part: str) -> np.ndarray:
        return _load_digits()[1][self._rows(part)]

    def num_classes(self) -> int:
        return 10


# -- folder ----------------------------------------------------------------------------


def _list_images(directory):
    """Image files under `directory` in sorted order, as bytes paths.

    Bytes, because a name that is not valid UTF-8 (a Latin-1 name from an old archive)
    cannot become a tf.string from Python's surrogate-escaped str; its bytes can.
    """
    files = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                files.append(os.fsencode(os.path.join(dirpath, name)))
    return files


_VALIDATED = {}


def _valid_files(paths, strict, key):
    """Decodes each file (bytes path) once and returns those that decode; logs or raises."""
    if not paths:
        return []
    cache_key = tuple((p, os.path.getsize(p), os.path.getmtime(p)) for p in paths)
    if cache_key not in _VALIDATED:
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths), tf.constant(paths)))
        _VALIDATED[cache_key] = _decodable(ds, _decode_file)
    good = _VALIDATED[cache_key]
    bad = [p for p in paths if p not in good]
    _report_bad(
        [repr(os.fsdecode(p)) for p in bad],
        len(paths),
        "image file",
        f"under {key}",
        strict,
        lambda: _why_undecodable(_decode_file, bad[0]),
    )
    return [p for p in paths if p in good]


class FolderSource(Source):
    """Image files in class sub-directories, plus an optional unlabeled flat folder."""

    def _class_root(self, part):
        root = self.data.path
        _require_path(root, "data.path")
        split_root = os.path.join(root, part)
        if os.path.isdir(split_root):
            return split_root
        logging.log_first_n(
            logging.INFO,
            "No %s/ under %s: split %r reads the class dirs of data.path itself.",
            1,
            part,
            root,
            part,
        )
        return root

    @staticmethod
    def _classes(class_root):
        classes = sorted(
            d
            for d in os.listdir(class_root)
            if not d.startswith(".") and os.path.isdir(os.path.join(class_root, d))
        )
        if not classes:
            raise ValueError(
                f"{class_root!r} has no class sub-directories; the folder source expects "
                "data.path/class_x/*.jpg (or data.path/<split>/class_x/*.jpg)."
            )
        return classes

    def _files(self, part):
        strict = self.data.strict
        if _is_unlabeled(part):
            unlabeled = self.data.unlabeled_path
            _require_path(unlabeled, "data.unlabeled_path")
            where = f"{unlabeled} (data.unlabeled_path)"
            files = _valid_files(_list_images(unlabeled), strict, where)
            labels = [UNLABELED] * len(files)
        else:
            class_root = self._class_root(part)
            files, labels = [], []
            for label, name in enumerate(self._classes(class_root)):
                found = _list_images(os.path.join(class_root, name))
                files += found
                labels += [label] * len(found)
            good = set(_valid_files(files, strict, f"{class_root} (data.path)"))
            keep = [i for i, f in enumerate(files) if f in good]
            files, labels = [files[i] for i in keep], [labels[i] for i in keep]
        if not files:
            raise ValueError(f"No decodable image files for split {part!r} of the folder source.")
        return files, np.array(labels, np.int32)

    def examples(self, part: str) -> _Examples:
        files, labels = self._files(part)
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(files), tf.constant(labels)))
        return _Examples(ds, _decode_file)

    def labels(self, part: str) -> np.ndarray:
        return self._files(part)[1]

    def num_classes(self) -> int:
        part = split_parts(self.data.train_split)[0]
        return len(self._classes(self._class_root(part)))

    def has_unlabeled(self) -> bool:
        return bool(self.data.unlabeled_path)

    def pretrain_parts(self, parts: list) -> list:
        if not self.data.path and self.data.unlabeled_path:
            # Pretraining from an unlabeled folder alone is allowed; probes need data.path.
            return [UNLABELED_SPLIT]
        return super().pretrain_parts(parts)


# -- tfrecord --------------------------------------------------------------------------

_TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=UNLABELED),
}
# The same keys, but a missing image parses as "" so the scan can name the record.
_TFRECORD_SCAN_FEATURES = {
    **_TFRECORD_FEATURES,
    "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


@dataclasses.dataclass(frozen=True)
class _RecordScan:
    """What one validation pass over a split's TFRecord files found."""

    counts: tuple  # per file: readable records (before its first CRC / truncation error)
    intact: bool  # every file reads to its end
    good: np.ndarray  # bool [sum(counts)]: parses and decodes
    labels: np.ndarray  # int32 [sum(good)]: labels of the good records


_TFRECORD_SCANS = {}


def _parse_example(record):
    parsed = tf.io.parse_single_example(record, _TFRECORD_FEATURES)
    return parsed["image/encoded"], tf.cast(parsed["image/class/label"], tf.int32)


def _count_records(ds):
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


def _records(files, counts, intact):
    """The readable records of `files`, in order."""
    if intact:
        return tf.data.TFRecordDataset(files)
    ds = tf.data.TFRecordDataset(files[0]).take(counts[0])
    for path, n in zip(files[1:], counts[1:], strict=True):
        ds = ds.concatenate(tf.data.TFRecordDataset(path).take(n))
    return ds


def _record_origin(files, counts, index):
    """Global record index -> "'file' record i" (i within the file)."""
    for path, n in zip(files, counts, strict=True):
        if index < n:
            return f"{path!r} record {index}"
        index -= n
    raise IndexError(index)


def _scan_tfrecords(files, strict):
    """Reads every record once: counts, labels, and what cannot be read or decoded.

    A flipped bit or a truncated file raises DataLossError in the record reader, which
    then abandons the rest of that file (the framing after a bad length cannot be
    trusted). `ignore_errors` on the training stream would drop such records silently,
    disagree with the counts, and hide which file is broken; instead this pass, like the
    folder source's, finds them once, up front: training reads each file only up to its
    first broken record and skips records that do not decode, so a bad record never
    stops a run (at the same step again after every resume).
    """
    stats = [tf.io.gfile.stat(f) for f in files]
    key = (tuple((f, s.length, s.mtime_nsec) for f, s in zip(files, stats, strict=True)), strict)
    if key in _TFRECORD_SCANS:
        return _TFRECORD_SCANS[key]
    counts, intact = [], True
    for path in files:
        try:
            counts.append(_count_records(tf.data.TFRecordDataset(path)))
        except tf.errors.DataLossError as e:
            intact = False
            n = _count_records(tf.data.TFRecordDataset(path).ignore_errors())
            counts.append(n)
            reason = e.message.splitlines()[0]
            if strict:
                raise ValueError(
                    f"TFRecord file {path!r} is corrupt after record {n} ({reason}); "
                    "rewrite it, or set data.strict=False to read its first records only."
                ) from None
            logging.warning(
                "TFRecord file %r is corrupt after record %d (%s); reading its first %d "
                "records only.",
                path,
                n,
                reason,
                n,
            )

    def probe(index, record):
        parsed = tf.io.parse_single_example(record, _TFRECORD_SCAN_FEATURES)
        encoded = parsed["image/encoded"]
        has_image = tf.strings.length(encoded) > 0
        shape = tf.cond(
            has_image, lambda: tf.shape(_decode_image(encoded)), lambda: tf.zeros([3], tf.int32)
        )
        label = tf.cast(parsed["image/class/label"], tf.int32)
        return index, has_image, tf.reduce_min(shape[:2]) > 0, label

    ds = _records(files, counts, intact).enumerate().map(probe, num_parallel_calls=AUTOTUNE)
    found = {}
    for idx, has_image, ok, label in ds.ignore_errors().batch(1024).as_numpy_iterator():
        for i, h, o, y in zip(idx.tolist(), has_image, ok, label.tolist(), strict=True):
            if not h:
                raise ValueError(
                    f"TFRecord {_record_origin(files, counts, i)} has no (or an empty) "
                    "'image/encoded' feature; the tfrecord source reads tf.train.Examples "
                    f"with {sorted(_TFRECORD_FEATURES)} (encoded image bytes, int64 label)."
                )
            if o:
                found[i] = y
    good = np.zeros(sum(counts), bool)
    good[list(found)] = True
    bad = np.flatnonzero(~good).tolist()

    def why():
        record = next(iter(_records(files, counts, intact).skip(bad[0]).take(1)))
        try:
            return _why_undecodable(_decode_image, _parse_example(record)[0].numpy())
        except tf.errors.OpError as e:
            return e.message.splitlines()[0]

    names = [_record_origin(files, counts, i) for i in bad[:_MAX_LOGGED_BAD]]
    where = f"in {len(files)} file(s) (data.path)"
    _report_bad(names, len(good), "TFRecord", where, strict, why, num_bad=len(bad))
    labels = np.array([found[i] for i in sorted(found)], np.int32)
    scan = _RecordScan(tuple(counts), intact, good, labels)
    _TFRECORD_SCANS[key] = scan
    return scan


class TFRecordSource(Source):
    """`tf.train.Example` files, read in sorted order, one at a time."""

    def _files(self, part):
        pattern = self.data.path
        if not pattern:
            raise FileNotFoundError("No TFRecord glob given; set data.path.")
        glob = pattern.replace("{split}", part)
        files = sorted(tf.io.gfile.glob(glob))
        if not files:
            raise FileNotFoundError(
                f"No TFRecord files match {glob!r} (split {part!r}); fix data.path "
                "(use '{split}' in it to select files per split)."
            )
        return files

    def examples(self, part: str) -> _Examples:
        # Files are read in sorted order, one at a time, so example indices are stable.
        files = self._files(part)
        scan = _scan_tfrecords(files, self.data.strict)
        ds = _records(files, scan.counts, scan.intact)
        if not scan.good.all():
            good = tf.constant(scan.good)
            ds = ds.enumerate().filter(lambda i, r: tf.gather(good, i)).map(lambda i, r: r)
        ds = ds.map(_parse_example, num_parallel_calls=AUTOTUNE)
        if _is_unlabeled(part):
            ds = ds.map(lambda x, y: (x, tf.constant(UNLABELED, tf.int32)))
        return _Examples(ds, _decode_image)

    def labels(self, part: str) -> np.ndarray:
        labels = _scan_tfrecords(self._files(part), self.data.strict).labels
        return np.full_like(labels, UNLABELED) if _is_unlabeled(part) else labels

    def num_classes(self) -> int:
        if self.data.num_classes > 0:
            return int(self.data.num_classes)
        if self.data.name in _KNOWN_NUM_CLASSES:
            return _KNOWN_NUM_CLASSES[self.data.name]
        logging.info("Scanning the TFRecord labels to count classes; set data.num_classes to skip.")
        part = split_parts(self.data.train_split)[0]
        return int(self.labels(part).max(initial=UNLABELED)) + 1


# -- tfds ------------------------------------------------------------------------------


class TFDSSource(Source):
    """A prepared TensorFlow Datasets dataset; nothing is ever downloaded here."""

    def _builder(self):
        import tensorflow_datasets as tfds  # Heavy; only the tfds source needs it.

        if not self.data.name:
            raise ValueError(
                "data.source='tfds' needs a dataset name; set data.name, e.g. 'cifar10'."
            )
        data_dir = self.data.path or None
        if data_dir and not tf.io.gfile.exists(data_dir):
            raise FileNotFoundError(
                f"TFDS data_dir {data_dir!r} does not exist; fix data.path ('' = default)."
            )
        return tfds.builder(self.data.name, data_dir=data_dir)

    def examples(self, part: str) -> _Examples:
        builder = self._builder()
        try:
            ds = builder.as_dataset(split=part, as_supervised=True, shuffle_files=False)
        except AssertionError as e:
            # TFDS asserts when the data was never prepared; as_dataset never downloads.
            raise FileNotFoundError(
                f"TFDS dataset {builder.name!r} is not prepared in {builder.data_dir!r}: {e} "
                "Prepare it on a machine with internet (`tfds build NAME --data_dir=DIR`; "
                "imagenet2012 needs its tars in DIR/downloads/manual/) and point data.path "
                "at DIR, or use data.source='npz'/'folder'/'tfrecord'."
            ) from e
        if _is_unlabeled(part):
            ds = ds.map(lambda x, y: (x, tf.constant(UNLABELED, tf.int32)))
        else:
            ds = ds.map(lambda x, y: (x, tf.cast(y, tf.int32)))
        return _Examples(ds, _decoded_image)

    def labels(self, part: str) -> np.ndarray:
        if _is_unlabeled(part):
            return np.full(self.count(part), UNLABELED, np.int32)
        # TFDS decodes the images on the way; a one-off cost of a balanced sample.
        ds = self.examples(part).ds.map(lambda x, y: y).batch(4096)
        return np.concatenate([np.zeros([0], np.int32), *ds.as_numpy_iterator()])

    def count(self, part: str) -> int:
        splits = self._builder().info.splits
        if splits:
            return int(splits[part].num_examples)
        # TFDS without split metadata (mocked in tests): count by iterating.
        return int(self.examples(part).ds.reduce(np.int64(0), lambda n, _: n + 1))

    def num_classes(self) -> int:
        return int(self._builder().info.features["label"].num_classes)

    def has_unlabeled(self) -> bool:
        if self.data.name in _TFDS_WITH_UNLABELED:
            return True
        return UNLABELED_SPLIT in self._builder().info.splits


# -- shared pipeline -------------------------------------------------------------------

SOURCES = {
    "npz": NpzSource,
    "tfds": TFDSSource,
    "folder": FolderSource,
    "tfrecord": TFRecordSource,
    "digits": DigitsSource,
}


def open_source(data: Data) -> Source:
    """The `Source` object of `data.source` (its examples, labels and counts per split part)."""
    name = data.source
    if name not in SOURCES:
        raise ValueError(f"Unknown data.source {name!r}; expected one of {tuple(SOURCES)}.")
    return SOURCES[name](data)


def _examples(source, split):
    parts = [source.examples(p) for p in split_parts(split)]
    ds = parts[0].ds
    for extra in parts[1:]:
        ds = ds.concatenate(extra.ds)
    return _Examples(ds, parts[0].decode)


def pretrain_split(data: Data) -> str:
    """The split expression pretraining reads: data.train_split plus unlabeled data."""
    return "+".join(open_source(data).pretrain_parts(split_parts(data.train_split)))


def _indexed(examples, input_context):
    """(index, payload, label), sharded; the index is global so seeds differ per shard."""
    ds = examples.ds.enumerate().map(lambda i, e: (i, e[0], e[1]))
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds


def _maybe_cache(ds, decode, data):
    """Decodes before caching when data.cache, so the cache holds uint8 images."""
    if not data.cache:
        return ds, decode
    ds = ds.map(lambda i, x, y: (i, decode(x), y), num_parallel_calls=AUTOTUNE).cache()
    return ds, tf.identity


def _options():
    options = tf.data.Options()
    # Reproducible batches need ordered parallel maps; say so explicitly.
    options.deterministic = True
    return options


def make_pretrain_dataset(
    data: Data,
    batch_size: int,
    seed: int,
    input_context: tf.distribute.InputContext | None = None,
    start_step: int = 0,
) -> tf.data.Dataset:
    """Endless shuffled two-view batches for AMDIM pretraining.

    Args:
      data: the `data` config section.
      batch_size: per-replica batch size (each input pipeline yields such batches).
      seed: int; fixes shuffling and every augmentation.
      input_context: optional `tf.distribute.InputContext`; examples are sharded by
        `input_pipeline_id` / `num_input_pipelines`.
      start_step: batches already consumed (resume): the stream continues exactly
        where a run that took that many steps stopped.

    Returns:
      A dataset of `((view1, view2), label)`: float32 [B, S, S, 3] views and int32 [B]
      labels, -1 for unlabeled examples.
    """
    preset = _preset(data)
    examples = _examples(open_source(data), pretrain_split(data))
    ds, decode = _maybe_cache(_indexed(examples, input_context), examples.decode, data)
    buffer = int(data.shuffle_buffer)
    key = tf.constant([0, seed], tf.int64)
    if buffer > 1:
        # A Python seed with reshuffle_each_iteration gives a fixed sequence of epoch
        # orders, so the stream is a pure function of (seed, position). (A tensor seed
        # per epoch breaks inside tf.data when TF's global seed is 0.)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    # `position` numbers every draw of the endless stream: an image seen in several
    # epochs gets a different augmentation each time, and resuming at a position
    # reproduces the uninterrupted stream exactly.
    ds = ds.repeat().enumerate()

    def two_views(position, example):
        index, payload, label = example
        example_key = tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(key, position), index
        )
        views = augment.two_views(decode(payload), example_key, preset)
        return views, label

    if start_step:
        # Skip before augmenting: resuming costs a shuffle pass, not the augmentation.
        ds = ds.skip(int(start_step) * int(batch_size))
    ds = ds.map(two_views, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(_options())


def _balanced_sample(labels, size, seed):
    """Indices of a seeded sample with (as near as possible) equal counts per class.

    size 0 takes the smallest class's count from every class. Classes are drawn in a
    seeded order for the remainder of size / classes; the result is in a seeded order so
    that every batch of it mixes classes.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[labels >= 0])
    if not classes.size:
        raise ValueError("A balanced sample needs labelled examples; the split has none.")
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    if not size:
        size = min(len(m) for m in members) * len(classes)
    per_class, extra = divmod(int(size), len(classes))
    takes = np.full(len(classes), per_class)
    takes[rng.permutation(len(classes))[:extra]] += 1
    short = [int(c) for c, m, t in zip(classes, members, takes, strict=True) if len(m) < t]
    if short:
        logging.warning(
            "Balanced sample of %d: classes %s have fewer examples; taking all of theirs.",
            size,
            short,
        )
    chosen = np.concatenate([m[:t] for m, t in zip(members, takes, strict=True)])
    return rng.permutation(chosen)


def make_eval_dataset(
    data: Data,
    split: str,
    batch_size: int,
    input_context: tf.distribute.InputContext | None = None,
    max_examples: int = 0,
    sample_seed: int | None = None,
    balanced: bool = False,
) -> tf.data.Dataset:
    """One pass over the labelled examples of `split`: `(image, label)` batches.

    Images are `augment.eval_view`s, float32 [B, S, S, 3]; labels int32 [B]; the last
    batch may be smaller; examples with label -1 are dropped.

    max_examples / sample_seed: a seeded uniform sample of that many examples
    (drawn before decoding, so it is cheap). Files are often sorted by class (the
    CIFAR-10 JPEG copy is), so "the first N" would be a few classes only.
    balanced: instead, a seeded sample with max_examples / num_classes examples of each
    class (0 = as many of each as the smallest class has), in a seeded order; the
    labels are read without decoding (tfds decodes once to read them).
    """
    preset = _preset(data)
    source = open_source(data)
    examples = _examples(source, split)
    ds = _indexed(examples, input_context).filter(lambda i, x, y: y >= 0)
    if balanced:
        labels = np.concatenate([source.labels(p) for p in split_parts(split)])
        seed = 0 if sample_seed is None else sample_seed
        chosen = _balanced_sample(labels, max_examples, seed)
        mask = np.zeros(len(labels), bool)
        mask[chosen] = True
        mask = tf.constant(mask)
        ds = ds.filter(lambda i, x, y: tf.gather(mask, i))
        ds = ds.shuffle(len(chosen), seed=seed)
    else:
        if sample_seed is not None:
            ds = ds.shuffle(num_examples(data, split), seed=sample_seed)
        if max_examples:
            ds = ds.take(max_examples)
    ds, decode = _maybe_cache(ds, examples.decode, data)
    ds = ds.map(
        lambda i, x, y: (augment.eval_view(decode(x), preset), y),
        num_parallel_calls=AUTOTUNE,
    )
    ds = ds.batch(batch_size, drop_remainder=False)
    return ds.prefetch(AUTOTUNE).with_options(_options())


def num_examples(data: Data, split: str) -> int:
    """Number of examples in `split` ("a+b" adds up), unlabeled ones included."""
    source = open_source(data)
    return sum(source.count(p) for p in split_parts(split))


def num_pretrain_examples(data: Data) -> int:
    """Number of examples one pretraining epoch visits (before sharding)."""
    return num_examples(data, pretrain_split(data))


def num_classes(data: Data) -> int:
    """Number of classes of the labelled data."""
    return open_source(data).num_classes()


def benchmark_pipeline(data: Data, batch_size: int, seconds: float, seed: int = 0) -> float:
    """Images per second that `make_pretrain_dataset` alone delivers on this machine."""
    it = iter(make_pretrain_dataset(data, batch_size, seed))
    for _ in range(3):  # Warm-up: tracing, thread pools and AUTOTUNE ramp-up.
        next(it)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(it)
        count += batch_size
    return count / (time.perf_counter() - start)
