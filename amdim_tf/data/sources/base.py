"""The `Source` contract every data source implements, and what sources share.

A `Source` is opened once per run from the `data` config section (`open_source`) and
passed down to everything that reads the data: it scans and validates each split part
the first time it is asked, and keeps what it found (the readable examples, their labels,
what it skipped and why) for its own lifetime, so validation happens once per opened
source and its warnings are logged once.

Shared here: split expressions ("train+unlabeled"), the unlabeled convention (label -1),
the parallel decode probe, and the one way bad items are reported (a warning naming the
first few, or under `data.strict` a one-line error naming the first).
"""

import dataclasses
import os
import re
from collections.abc import Callable
from typing import TypeAlias

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from amdim_tf.errors import UserError, first_line

AUTOTUNE = tf.data.AUTOTUNE
UNLABELED = -1
UNLABELED_SPLIT = "unlabeled"
MAX_LOGGED_BAD = 5

Data: TypeAlias = ml_collections.ConfigDict  # the `data` section of a run config


@dataclasses.dataclass
class Examples:
    """A finite, fixed-order dataset of (payload, label int32) and how to decode it."""

    ds: tf.data.Dataset
    # payload -> uint8 [H, W, 3]; payloads are encoded bytes, file paths or images.
    decode: Callable


def split_parts(split: str) -> list:
    """The parts of a split expression: "train+unlabeled" -> ["train", "unlabeled"]."""
    parts = [p.strip() for p in str(split).split("+") if p.strip()]
    if not parts:
        raise UserError(f"Empty split {split!r}; use e.g. 'train' or 'train+unlabeled'.")
    return parts


def is_unlabeled(part: str) -> bool:
    """Whether a split part is the unlabeled one (its examples get label -1)."""
    return part.split("[")[0] == UNLABELED_SPLIT


def require_path(path: str, key: str) -> None:
    """A one-line error naming `key` when the path it gives is empty or missing."""
    # The flag's full name: a preset's relative path fails outside this repository.
    if not path:
        raise FileNotFoundError(f"No data path given; set {key} (--config.{key}=PATH).")
    unset = [v for v in re.findall(r"\$\{?(\w+)", path) if v not in os.environ]
    if unset and not tf.io.gfile.exists(path):  # a preset's data directory (presets/)
        raise FileNotFoundError(
            f"{key}={path!r} names the environment variable {unset[0]}, which is not set: "
            f"export {unset[0]}=DIR (the directory holding the data), or pass "
            f"--config.{key}=PATH."
        )
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist; fix {key} (--config.{key}=PATH).")


def decodable(ds: tf.data.Dataset, decode: Callable) -> set:
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


def why_undecodable(decode: Callable, payload) -> str:
    """The first line of the decoder's error on `payload` (or why its image is empty)."""
    try:
        decode(tf.constant(payload)).numpy()
        return "it decodes to an empty image"
    except tf.errors.OpError as e:
        return first_line(e.message)


def report_bad(bad, total, what, where, strict, why, num_bad=None) -> None:
    """Raises on the first bad item under `strict`, else logs the first few.

    bad: names of the bad items (at least the first few); num_bad: how many there are
    (default len(bad)); why(): the reason the first one fails.
    """
    num_bad = len(bad) if num_bad is None else num_bad
    if bad and strict:
        raise UserError(
            f"Cannot decode {what} {bad[0]} ({why()}); {num_bad} bad {what}(s) {where}. "
            "Remove or fix them, or set data.strict=False to skip them."
        )
    if bad:
        logging.warning(
            "Skipping %d of %d %ss %s that cannot be read (the first: %s); first: %s",
            num_bad,
            total,
            what,
            where,
            why(),  # too large for data.max_pixels, or the decoder's error
            ", ".join(str(b) for b in bad[:MAX_LOGGED_BAD]),
        )


class Source:
    """A data source: the examples, labels and counts of each split part, and classes.

    Subclasses read their settings from the `data` config section given here, and keep
    the results of their scans on the instance (never in module state): open a source
    once per run and pass it down.
    """

    def __init__(self, data: Data):
        self.data = data

    def examples(self, part: str) -> Examples:
        """The examples of one split part, in a fixed order."""
        raise NotImplementedError

    def labels(self, part: str) -> np.ndarray:
        """int32 [count(part)]: the labels of `examples(part)`, read without decoding."""
        raise NotImplementedError

    def count(self, part: str) -> int:
        """Number of readable examples of one split part."""
        return len(self.labels(part))

    def num_classes(self) -> int:
        """Number of classes of the labelled data."""
        raise NotImplementedError

    def class_names(self, part: str | None = None) -> tuple:
        """Names of the classes in label order, or () when the source has none.

        part: the split part whose classes are asked (default data.train_split's); only
        a source whose classes can differ per part (folder) reads it.
        """
        return ()

    def skipped(self, part: str) -> list:
        """Names of the items of `part` that the scan skipped (unreadable, undecodable)."""
        return []

    def has_labels(self) -> bool:
        """Whether the source gives labelled splits (the online probes, the kNN monitor,
        finetuning and the mislabel check need them); a folder read with
        data.labels="none" gives none."""
        return True

    def has_unlabeled(self) -> bool:
        """Whether pretraining adds an unlabeled part to data.train_split."""
        return False

    def pretrain_parts(self, parts: list) -> list:
        """The split parts pretraining reads for the parts of data.train_split."""
        if not any(is_unlabeled(p) for p in parts) and self.has_unlabeled():
            return [*parts, UNLABELED_SPLIT]
        return parts
