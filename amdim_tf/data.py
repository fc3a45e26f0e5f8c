"""Input pipelines: every data source into the same AMDIM two-view batches.

AMDIM (Bachman et al. 2019, Sec. 3.1) pretrains on two augmented views of each image and
evaluates frozen features on labelled splits. The official code (amdim-public,
`datasets.py: build_dataset`) pretrains STL-10 on `train+unlabeled` and evaluates on
`train`/`test`; we follow that here for every source:

- `make_pretrain_dataset` yields `((view1, view2), label)` forever, label -1 for unlabeled
  examples (STL-10's `unlabeled` split, an unlabeled image folder);
- `make_eval_dataset` yields `(image, label)` once over the labelled examples of a split.

Sources (`data.source`), all configured by the `data` config section:

- "npz": the project's encoded-array file (`S_jpeg`, `S_offsets`, `S_labels`,
  `class_names`, see ../shared/data/README.md), `data.path` is the file.
- "digits": scikit-learn's 8x8 digits upscaled to 32x32 RGB; offline demo data. The first
  1,440 images are "train", the remaining 357 "test".
- "folder": `data.path/class_x/*.{jpg,jpeg,png,bmp,gif}` (labels are sorted class dirs),
  or `data.path/<split>/class_x/...` when such a split dir exists; plus an optional flat
  folder of unlabeled images, `data.unlabeled_path`, used for pretraining only. Every
  file is decoded once up front; undecodable files are skipped and logged (or raise with
  `data.strict`), grayscale/RGBA become RGB and any size is resized by the augmentation.
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

Splits may be joined with "+" ("train+unlabeled"); a part named "unlabeled" gets label -1.
Every example's augmentation seed is derived from (seed, example index, epoch), so a fixed
seed reproduces each batch exactly, with or without caching and parallelism.
"""

import dataclasses
import functools
import os
import time
from typing import Callable

from absl import logging
import numpy as np
import tensorflow as tf

from amdim_tf import augment

AUTOTUNE = tf.data.AUTOTUNE
SOURCES = ("npz", "tfds", "folder", "tfrecord", "digits")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
UNLABELED = -1
UNLABELED_SPLIT = "unlabeled"

# Digits has no official split; the first 80% (1,440 of 1,797) are a stable "train".
_DIGITS_TRAIN = 1440
# Datasets whose pretraining set, like the paper's STL-10 runs, adds an unlabeled split.
_TFDS_WITH_UNLABELED = ("stl10",)
# Class counts for tfrecord copies of well-known datasets, so no full scan is needed.
_KNOWN_NUM_CLASSES = {
    "cifar10": 10, "cifar100": 100, "stl10": 10, "imagenet2012": 1000,
    "places365_small": 365, "digits": 10,
}
_MAX_LOGGED_BAD_FILES = 5


@dataclasses.dataclass
class _Examples:
    """A finite, fixed-order dataset of (payload, label int32) and how to decode it."""

    ds: tf.data.Dataset
    # payload -> uint8 [H, W, 3]; payloads are encoded bytes, file paths or images.
    decode: Callable


def _cfg(data, key, default=None):
    value = data.get(key, default) if hasattr(data, "get") else getattr(data, key, default)
    return default if value is None else value


def _preset(data):
    image_size = int(_cfg(data, "image_size", 32))
    preset = _cfg(data, "augment", "") or augment.preset_for_size(image_size)
    if augment.preset_size(preset) != image_size:
        raise ValueError(
            f"data.augment={preset!r} produces {augment.preset_size(preset)}-pixel views "
            f"but data.image_size={image_size}; set data.augment='' to pick the preset "
            "for the image size, or make the two agree."
        )
    return preset


def _split_parts(split):
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
    gray = lambda: tf.tile(image[..., :1], [1, 1, 3])  # noqa: E731
    rgb = lambda: image[..., :3]  # noqa: E731
    out = tf.cond(channels < 3, gray, rgb)
    return tf.ensure_shape(out, [None, None, 3])


def _decode_image(contents):
    """Any supported encoding -> uint8 [H, W, 3]."""

    def jpeg():
        # INTEGER_ACCURATE matches PIL bit for bit (see ../shared/data/README.md).
        return tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE")

    def other():
        image = tf.io.decode_image(contents, dtype=tf.uint8, expand_animations=False)
        return _to_rgb(image)

    image = tf.cond(tf.io.is_jpeg(contents), jpeg, other)
    return tf.ensure_shape(image, [None, None, 3])


def _decode_file(path):
    return _decode_image(tf.io.read_file(path))


# -- npz -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NpzData:
    """The encoded-array format: per split, JPEG bytes and labels, plus class names."""

    splits: dict  # name -> (encoded: object array of bytes [N], labels: int32 [N])
    class_names: tuple


@functools.lru_cache(maxsize=4)
def _load_npz_cached(path, mtime):
    del mtime  # Only part of the cache key, so an edited file is re-read.
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        splits = {}
        for key in sorted(keys):
            if not key.endswith("_jpeg"):
                continue
            name = key[: -len("_jpeg")]
            missing = {f"{name}_offsets", f"{name}_labels"} - keys
            if missing:
                raise ValueError(f"{path!r}: split {name!r} lacks {sorted(missing)}.")
            blob = f[key]
            offsets = f[f"{name}_offsets"].astype(np.int64)
            labels = f[f"{name}_labels"].astype(np.int32)
            if len(offsets) != len(labels) + 1:
                raise ValueError(
                    f"{path!r}: {name}_offsets has {len(offsets)} entries, expected "
                    f"{len(labels) + 1} (one more than {name}_labels)."
                )
            raw = blob.tobytes()
            encoded = np.array(
                [raw[offsets[i]: offsets[i + 1]] for i in range(len(labels))], dtype=object
            )
            splits[name] = (encoded, labels)
        class_names = tuple(str(n) for n in f["class_names"]) if "class_names" in keys else ()
    if not splits:
        raise ValueError(f"{path!r} holds no '<split>_jpeg' arrays; is it the npz format?")
    return NpzData(splits=splits, class_names=class_names)


def load_npz(path):
    """Reads the project's encoded-array `.npz` (see ../shared/data/README.md)."""
    _require_path(path, "data.path")
    return _load_npz_cached(os.path.abspath(path), os.path.getmtime(path))


def _npz_split(data, part):
    npz = load_npz(_cfg(data, "path", ""))
    if part not in npz.splits:
        raise ValueError(
            f"Split {part!r} is not in {_cfg(data, 'path')!r}; it has {sorted(npz.splits)}."
            " Fix data.train_split / data.eval_split."
        )
    return npz.splits[part]


def _npz_examples(data, part):
    encoded, labels = _npz_split(data, part)
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(list(encoded)), labels))
    return _Examples(ds, _decode_image)


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


def _digits_examples(part):
    images, labels = _load_digits()
    rows = {"train": slice(0, _DIGITS_TRAIN), "test": slice(_DIGITS_TRAIN, None)}
    if part not in rows:
        raise ValueError(
            f"Split {part!r} is not a digits split; use 'train' or 'test' in "
            "data.train_split / data.eval_split."
        )
    ds = tf.data.Dataset.from_tensor_slices((images[rows[part]], labels[rows[part]]))
    return _Examples(ds, tf.identity)


# -- folder ----------------------------------------------------------------------------


def _list_images(directory):
    files = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                files.append(os.path.join(dirpath, name))
    return files


_VALIDATED = {}


def _valid_files(paths, strict, key):
    """Decodes each file once and returns those that decode; logs or raises on others."""
    if not paths:
        return []
    cache_key = tuple((p, os.path.getsize(p), os.path.getmtime(p)) for p in paths)
    if cache_key in _VALIDATED:
        good = _VALIDATED[cache_key]
    else:
        # A parallel tf.data pass: a file that fails to decode here would fail in
        # training, where one bad JPEG in a million would stop the run.
        probe = tf.data.Dataset.from_tensor_slices(paths).map(
            lambda p: (p, tf.shape(_decode_file(p))), num_parallel_calls=AUTOTUNE
        )
        probe = probe.ignore_errors()
        good = {
            p.decode() for p, shape in probe.as_numpy_iterator() if min(shape[:2]) > 0
        }
        _VALIDATED[cache_key] = good
    bad = [p for p in paths if p not in good]
    if bad and strict:
        try:
            _decode_file(tf.constant(bad[0])).numpy()
            reason = "it decodes to an empty image"
        except tf.errors.OpError as e:
            reason = e.message.splitlines()[0]
        raise ValueError(
            f"Cannot decode image file {bad[0]!r} ({reason}); {len(bad)} bad file(s) under "
            f"{key}. Remove or fix them, or set data.strict=False to skip them."
        )
    if bad:
        logging.warning(
            "Skipping %d of %d image files under %s that do not decode; first: %s",
            len(bad), len(paths), key, ", ".join(bad[:_MAX_LOGGED_BAD_FILES]),
        )
    return [p for p in paths if p in good]


def _folder_class_root(data, part):
    root = _cfg(data, "path", "")
    _require_path(root, "data.path")
    split_root = os.path.join(root, part)
    if os.path.isdir(split_root):
        return split_root
    logging.log_first_n(
        logging.INFO, "No %s/ under %s: split %r reads the class dirs of data.path itself.",
        1, part, root, part,
    )
    return root


def _folder_classes(class_root):
    classes = sorted(
        d for d in os.listdir(class_root)
        if not d.startswith(".") and os.path.isdir(os.path.join(class_root, d))
    )
    if not classes:
        raise ValueError(
            f"{class_root!r} has no class sub-directories; the folder source expects "
            "data.path/class_x/*.jpg (or data.path/<split>/class_x/*.jpg)."
        )
    return classes


def _folder_examples(data, part):
    strict = bool(_cfg(data, "strict", False))
    if _is_unlabeled(part):
        unlabeled = _cfg(data, "unlabeled_path", "")
        _require_path(unlabeled, "data.unlabeled_path")
        files = _valid_files(_list_images(unlabeled), strict, f"{unlabeled} (data.unlabeled_path)")
        labels = [UNLABELED] * len(files)
    else:
        class_root = _folder_class_root(data, part)
        files, labels = [], []
        for label, name in enumerate(_folder_classes(class_root)):
            found = _list_images(os.path.join(class_root, name))
            files += found
            labels += [label] * len(found)
        good = set(_valid_files(files, strict, f"{class_root} (data.path)"))
        keep = [i for i, f in enumerate(files) if f in good]
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    if not files:
        raise ValueError(f"No decodable image files for split {part!r} of the folder source.")
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(files), tf.constant(labels, tf.int32))
    )
    return _Examples(ds, _decode_file)


# -- tfrecord --------------------------------------------------------------------------

_TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=UNLABELED),
}


def _tfrecord_files(data, part):
    pattern = _cfg(data, "path", "")
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


def _parse_example(record):
    parsed = tf.io.parse_single_example(record, _TFRECORD_FEATURES)
    return parsed["image/encoded"], tf.cast(parsed["image/class/label"], tf.int32)


def _tfrecord_examples(data, part):
    # Files are read in sorted order, one at a time, so example indices are stable.
    ds = tf.data.TFRecordDataset(_tfrecord_files(data, part))
    ds = ds.map(_parse_example, num_parallel_calls=AUTOTUNE)
    if _is_unlabeled(part):
        ds = ds.map(lambda x, y: (x, tf.constant(UNLABELED, tf.int32)))
    return _Examples(ds, _decode_image)


_TFRECORD_COUNTS = {}


def _count_records(files):
    key = tuple(files)
    if key not in _TFRECORD_COUNTS:
        # Reads every file once; memoised because num_examples is asked repeatedly.
        _TFRECORD_COUNTS[key] = int(
            tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1)
        )
    return _TFRECORD_COUNTS[key]


# -- tfds ------------------------------------------------------------------------------


def _tfds_builder(data):
    import tensorflow_datasets as tfds  # Heavy; only the tfds source needs it.

    name = _cfg(data, "name", "")
    if not name:
        raise ValueError("data.source='tfds' needs a dataset name; set data.name, e.g. 'cifar10'.")
    data_dir = _cfg(data, "path", "") or None
    if data_dir and not tf.io.gfile.exists(data_dir):
        raise FileNotFoundError(
            f"TFDS data_dir {data_dir!r} does not exist; fix data.path ('' = default)."
        )
    return tfds.builder(name, data_dir=data_dir)


def _tfds_examples(data, part):
    builder = _tfds_builder(data)
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
    return _Examples(ds, _to_rgb)


def _tfds_has_unlabeled(data):
    name = _cfg(data, "name", "")
    if name in _TFDS_WITH_UNLABELED:
        return True
    return UNLABELED_SPLIT in _tfds_builder(data).info.splits


# -- shared pipeline -------------------------------------------------------------------


def _source(data):
    source = _cfg(data, "source", "")
    if source not in SOURCES:
        raise ValueError(f"Unknown data.source {source!r}; expected one of {SOURCES}.")
    return source


def _part_examples(data, part):
    source = _source(data)
    if source == "npz":
        return _npz_examples(data, part)
    if source == "digits":
        return _digits_examples(part)
    if source == "folder":
        return _folder_examples(data, part)
    if source == "tfrecord":
        return _tfrecord_examples(data, part)
    return _tfds_examples(data, part)


def _examples(data, split):
    parts = [_part_examples(data, p) for p in _split_parts(split)]
    ds = parts[0].ds
    for extra in parts[1:]:
        ds = ds.concatenate(extra.ds)
    return _Examples(ds, parts[0].decode)


def pretrain_split(data):
    """The split expression pretraining reads: data.train_split plus unlabeled data."""
    parts = _split_parts(_cfg(data, "train_split", "train"))
    source = _source(data)
    has_unlabeled = any(_is_unlabeled(p) for p in parts)
    if not has_unlabeled and (
        (source == "folder" and _cfg(data, "unlabeled_path", ""))
        or (source == "tfds" and _tfds_has_unlabeled(data))
    ):
        parts.append(UNLABELED_SPLIT)
    if source == "folder" and not _cfg(data, "path", "") and _cfg(data, "unlabeled_path", ""):
        # Pretraining from an unlabeled folder alone is allowed; probes need data.path.
        parts = [UNLABELED_SPLIT]
    return "+".join(parts)


def _indexed(examples, input_context):
    """(index, payload, label), sharded; the index is global so seeds differ per shard."""
    ds = examples.ds.enumerate().map(lambda i, e: (i, e[0], e[1]))
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds


def _maybe_cache(ds, decode, data):
    """Decodes before caching when data.cache, so the cache holds uint8 images."""
    if not _cfg(data, "cache", False):
        return ds, decode
    ds = ds.map(lambda i, x, y: (i, decode(x), y), num_parallel_calls=AUTOTUNE).cache()
    return ds, tf.identity


def _options():
    options = tf.data.Options()
    # Reproducible batches need ordered parallel maps; say so explicitly.
    options.deterministic = True
    return options


def make_pretrain_dataset(data, batch_size, seed, input_context=None, start_step=0):
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
    examples = _examples(data, pretrain_split(data))
    ds, decode = _maybe_cache(_indexed(examples, input_context), examples.decode, data)
    buffer = int(_cfg(data, "shuffle_buffer", 0))
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


def make_eval_dataset(data, split, batch_size, input_context=None, max_examples=0,
                      sample_seed=None):
    """One pass over the labelled examples of `split`: `(image, label)` batches.

    Images are `augment.eval_view`s, float32 [B, S, S, 3]; labels int32 [B]; the last
    batch may be smaller; examples with label -1 are dropped.

    max_examples / sample_seed: a seeded uniform sample of that many examples
    (drawn before decoding, so it is cheap). Files are often sorted by class (the
    CIFAR-10 JPEG copy is), so "the first N" would be a few classes only.
    """
    preset = _preset(data)
    examples = _examples(data, split)
    ds = _indexed(examples, input_context).filter(lambda i, x, y: y >= 0)
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


def _part_count(data, part):
    source = _source(data)
    if source == "npz":
        return len(_npz_split(data, part)[1])
    if source == "digits":
        return _DIGITS_TRAIN if part == "train" else len(_load_digits()[1]) - _DIGITS_TRAIN
    if source == "tfrecord":
        return _count_records(_tfrecord_files(data, part))
    if source == "tfds":
        splits = _tfds_builder(data).info.splits
        if splits:
            return int(splits[part].num_examples)
    # Folders, and TFDS without split metadata (mocked in tests): count by iterating.
    return int(_part_examples(data, part).ds.reduce(np.int64(0), lambda n, _: n + 1))


def num_examples(data, split):
    """Number of examples in `split` ("a+b" adds up), unlabeled ones included."""
    return sum(_part_count(data, p) for p in _split_parts(split))


def num_pretrain_examples(data):
    """Number of examples one pretraining epoch visits (before sharding)."""
    return num_examples(data, pretrain_split(data))


def num_classes(data):
    """Number of classes of the labelled data."""
    source = _source(data)
    if source == "digits":
        return 10
    if source == "npz":
        npz = load_npz(_cfg(data, "path", ""))
        if npz.class_names:
            return len(npz.class_names)
        return int(max(labels.max() for _, labels in npz.splits.values())) + 1
    if source == "folder":
        part = _split_parts(_cfg(data, "train_split", "train"))[0]
        return len(_folder_classes(_folder_class_root(data, part)))
    if source == "tfds":
        return int(_tfds_builder(data).info.features["label"].num_classes)
    configured = int(_cfg(data, "num_classes", 0))
    if configured > 0:
        return configured
    name = _cfg(data, "name", "")
    if name in _KNOWN_NUM_CLASSES:
        return _KNOWN_NUM_CLASSES[name]
    logging.info("Scanning the TFRecord labels to count classes; set data.num_classes to skip.")
    part = _split_parts(_cfg(data, "train_split", "train"))[0]
    labels = _tfrecord_examples(data, part).ds.map(lambda x, y: y)
    return int(labels.reduce(np.int32(-1), tf.maximum)) + 1


def benchmark_pipeline(data, batch_size, seconds, seed=0):
    """Images per second that `make_pretrain_dataset` alone delivers on this machine."""
    it = iter(make_pretrain_dataset(data, batch_size, seed))
    for _ in range(3):  # Warm-up: tracing, thread pools and AUTOTUNE ramp-up.
        next(it)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(it)
        count += batch_size
    return count / (time.perf_counter() - start)
