"""The "npz" source: the project's encoded-array file (see ../shared/data/README.md).

`data.path` is an `.npz` holding, per split, `<split>_jpeg` (the encoded images
concatenated, 1-D uint8), `<split>_offsets` (byte offsets, one more than images) and
`<split>_labels` (-1 for unlabeled), plus `class_names`. Its arrays are checked when
loaded (shapes, dtypes, offsets, label range); records that the decode gate refuses or
that do not decode are skipped once, when the opened source first reads their split.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from amdim_tf.data import decode
from amdim_tf.data.sources.base import (
    UNLABELED,
    Examples,
    Source,
    decodable,
    report_bad,
    require_path,
    why_undecodable,
)
from amdim_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class NpzData:
    """The encoded-array format: per split, JPEG bytes and labels, plus class names."""

    splits: dict  # name -> (encoded: object array of bytes [N], labels: int32 [N])
    class_names: tuple


def _check_npz_split(path, name, blob, offsets, labels, num_names):
    """One-line errors for arrays that would otherwise fail deep inside TF."""
    where = f"{path!r}: {name}"
    if blob.ndim != 1 or blob.dtype != np.uint8:
        raise UserError(
            f"{where}_jpeg is a {blob.ndim}-D {blob.dtype} array; store the JPEG files "
            "concatenated as 1-D uint8 (np.frombuffer(b''.join(jpegs), np.uint8))."
        )
    if offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer):
        raise UserError(
            f"{where}_offsets is a {offsets.ndim}-D {offsets.dtype} array; store 1-D "
            "integer byte offsets (np.cumsum([0] + jpeg_lengths))."
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"{where}_labels is a {labels.ndim}-D {labels.dtype} array; store 1-D integer "
            "class indices (-1 for unlabeled)."
        )
    if len(offsets) != len(labels) + 1:
        raise UserError(
            f"{where}_offsets has {len(offsets)} entries, expected {len(labels) + 1} "
            f"(one more than {name}_labels)."
        )
    offsets = offsets.astype(np.int64)
    drops = np.flatnonzero(np.diff(offsets) < 0)
    if drops.size:
        i = int(drops[0])
        raise UserError(
            f"{where}_offsets decreases at entry {i} ({offsets[i]} -> {offsets[i + 1]}); "
            f"image i is {name}_jpeg[offsets[i]:offsets[i + 1]], so rebuild the offsets "
            "as np.cumsum([0] + jpeg_lengths)."
        )
    if offsets.size and (offsets[0] < 0 or offsets[-1] > blob.size):
        raise UserError(
            f"{where}_offsets span {offsets[0]}..{offsets[-1]} but {name}_jpeg has "
            f"{blob.size} bytes; rebuild the offsets as np.cumsum([0] + jpeg_lengths)."
        )
    labels = labels.astype(np.int64)
    limit = num_names if num_names else np.iinfo(np.int32).max
    wrong = np.flatnonzero((labels < UNLABELED) | (labels >= limit))
    if wrong.size:
        i = int(wrong[0])
        expected = f"0..{num_names - 1} (class_names has {num_names})" if num_names else ">= 0"
        raise UserError(
            f"{where}_labels[{i}] is {labels[i]}; labels must be {expected}, or -1 for "
            "unlabeled. Fix the labels (or class_names)."
        )
    return offsets


def load_npz(path: str) -> NpzData:
    """Reads and checks the project's encoded-array `.npz` (see ../shared/data/README.md)."""
    require_path(path, "data.path")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != b"PK":  # np.load would call any non-zip file "pickled data"
        raise UserError(
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
                raise UserError(f"{path!r}: split {name!r} lacks {sorted(missing)}.")
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
        raise UserError(f"{path!r} holds no '<split>_jpeg' arrays; is it the npz format?")
    return NpzData(splits=splits, class_names=class_names)


class NpzSource(Source):
    """The project's encoded-array file; undecodable records are skipped once, up front."""

    def __init__(self, data):
        super().__init__(data)
        self._npz = None
        self._splits = {}  # part -> (encoded, labels, skipped record indices)

    def _file(self) -> NpzData:
        if self._npz is None:
            self._npz = load_npz(self.data.path)
        return self._npz

    def _split(self, part):
        if part in self._splits:
            return self._splits[part]
        path = self.data.path
        npz = self._file()
        if part not in npz.splits:
            raise UserError(
                f"Split {part!r} is not in {path!r}; it has {sorted(npz.splits)}."
                " Fix data.train_split / data.eval_split."
            )
        encoded, labels = npz.splits[part]
        max_pixels = int(self.data.max_pixels)
        refused = {}
        for i, payload in enumerate(encoded):
            reason = decode.refusal(payload, max_pixels)
            if reason:
                refused[i] = reason
        rest = [i for i in range(len(labels)) if i not in refused]
        good = set()
        if rest:
            payloads = [encoded[i] for i in rest]
            ds = tf.data.Dataset.from_tensor_slices((np.array(rest, np.int64), payloads))
            good = decodable(ds, decode.decode_image)
        bad = [i for i in range(len(labels)) if i not in good]

        def why():
            first = bad[0]
            return refused.get(first) or why_undecodable(decode.decode_image, encoded[first])

        report_bad(
            bad,
            len(labels),
            "record",
            f"of split {part!r} in {path!r} (data.path)",
            self.data.strict,
            why,
        )
        if bad:
            keep = np.array(sorted(good), dtype=np.int64)
            encoded, labels = encoded[keep], labels[keep]
        self._splits[part] = (encoded, labels, bad)
        return self._splits[part]

    def examples(self, part: str) -> Examples:
        encoded, labels, _ = self._split(part)
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(list(encoded)), labels))
        return Examples(ds, decode.decode_image)

    def labels(self, part: str) -> np.ndarray:
        return self._split(part)[1]

    def skipped(self, part: str) -> list:
        return [f"{part} record {i}" for i in self._split(part)[2]]

    def num_classes(self) -> int:
        npz = self._file()
        if npz.class_names:
            return len(npz.class_names)
        return int(max(labels.max() for _, labels in npz.splits.values())) + 1

    def class_names(self, part: str | None = None) -> tuple:
        return self._file().class_names
