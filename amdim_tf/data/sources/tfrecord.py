"""The "tfrecord" source: `tf.train.Example` files (the Model Garden / SimCLR layout).

Each example holds `image/encoded` (encoded image bytes) and `image/class/label` (int64,
used as stored). `data.path` is a glob in which `{split}` is replaced by the split name
(e.g. `/data/imagenet/{split}-*`); files are read in sorted order, one at a time, so
example indices are stable. The opened source scans a split's files once: record
counts, labels, corrupt files (read up to their first broken record), and records that
the decode gate refuses or that do not decode (skipped, counted and named).
"""

import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging

from amdim_tf.data import decode
from amdim_tf.data.sources.base import (
    AUTOTUNE,
    UNLABELED,
    Examples,
    Source,
    is_unlabeled,
    report_bad,
    split_parts,
    why_undecodable,
)
from amdim_tf.errors import UserError, first_line

# Class counts for tfrecord copies of well-known datasets, so no full scan is needed.
_KNOWN_NUM_CLASSES = {
    "cifar10": 10,
    "cifar100": 100,
    "stl10": 10,
    "imagenet2012": 1000,
    "places365_small": 365,
    "digits": 10,
}
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
    skipped: tuple  # origins of the records that cannot be parsed or decoded


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


def _scan_tfrecords(files, strict, max_pixels):
    """Reads every record once: counts, labels, and what cannot be read or decoded.

    A flipped bit or a truncated file raises DataLossError in the record reader, which
    then abandons the rest of that file (the framing after a bad length cannot be
    trusted). `ignore_errors` on the training stream would drop such records silently,
    disagree with the counts, and hide which file is broken; instead this pass, like the
    folder source's, finds them once, up front: training reads each file only up to its
    first broken record and skips records that do not decode, so a bad record never
    stops a run (at the same step again after every resume). Records whose header
    declares more than `max_pixels` are refused before the decode probe allocates them.
    """
    counts, intact = [], True
    for path in files:
        try:
            counts.append(_count_records(tf.data.TFRecordDataset(path)))
        except tf.errors.DataLossError as e:
            intact = False
            n = _count_records(tf.data.TFRecordDataset(path).ignore_errors())
            counts.append(n)
            reason = first_line(e.message)
            if strict:
                raise UserError(
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

    def parse(index, record):
        parsed = tf.io.parse_single_example(record, _TFRECORD_SCAN_FEATURES)
        encoded = parsed["image/encoded"]
        head = tf.strings.substr(encoded, 0, decode.HEADER_BYTES)
        label = tf.cast(parsed["image/class/label"], tf.int32)
        return index, tf.strings.length(encoded) > 0, head, label

    # Pass 1: parse, and the gate on each header.
    ds = _records(files, counts, intact).enumerate().map(parse, num_parallel_calls=AUTOTUNE)
    labels_of, refused = {}, {}
    for idx, has_image, heads, label in ds.ignore_errors().batch(256).as_numpy_iterator():
        for i, h, head, y in zip(idx.tolist(), has_image, heads, label.tolist(), strict=True):
            if not h:
                raise UserError(
                    f"TFRecord {_record_origin(files, counts, i)} has no (or an empty) "
                    "'image/encoded' feature; the tfrecord source reads tf.train.Examples "
                    f"with {sorted(_TFRECORD_FEATURES)} (encoded image bytes, int64 label)."
                )
            reason = decode.refusal(head, max_pixels)
            if reason:
                refused[i] = reason
            else:
                labels_of[i] = y
    # Pass 2: decode what the gate let through.
    total = sum(counts)
    allowed = np.zeros(total, bool)
    allowed[list(labels_of)] = True
    allowed_t = tf.constant(allowed)

    def probe(index, record):
        encoded = _parse_example(record)[0]
        return index, tf.reduce_min(tf.shape(decode.decode_image(encoded))[:2]) > 0

    ds = _records(files, counts, intact).enumerate()
    ds = ds.filter(lambda i, r: tf.gather(allowed_t, i)).map(probe, num_parallel_calls=AUTOTUNE)
    good = np.zeros(total, bool)
    for idx, ok in ds.ignore_errors().batch(1024).as_numpy_iterator():
        good[idx[ok]] = True
    bad = np.flatnonzero(~good).tolist()

    def why():
        if bad[0] in refused:
            return refused[bad[0]]
        record = next(iter(_records(files, counts, intact).skip(bad[0]).take(1)))
        try:
            return why_undecodable(decode.decode_image, _parse_example(record)[0].numpy())
        except tf.errors.OpError as e:
            return first_line(e.message)

    names = [_record_origin(files, counts, i) for i in bad]
    where = f"in {len(files)} file(s) (data.path)"
    report_bad(names, total, "TFRecord", where, strict, why)
    labels = np.array([labels_of[i] for i in np.flatnonzero(good).tolist()], np.int32)
    return _RecordScan(tuple(counts), intact, good, labels, tuple(names))


class TFRecordSource(Source):
    """`tf.train.Example` files, read in sorted order, one at a time."""

    def __init__(self, data):
        super().__init__(data)
        self._scans = {}  # part -> (files, _RecordScan)

    def _scan(self, part):
        if part not in self._scans:
            files = self._files(part)
            scan = _scan_tfrecords(files, self.data.strict, int(self.data.max_pixels))
            self._scans[part] = (files, scan)
        return self._scans[part]

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

    def examples(self, part: str) -> Examples:
        # Files are read in sorted order, one at a time, so example indices are stable.
        files, scan = self._scan(part)
        ds = _records(files, scan.counts, scan.intact)
        if not scan.good.all():
            good = tf.constant(scan.good)
            ds = ds.enumerate().filter(lambda i, r: tf.gather(good, i)).map(lambda i, r: r)
        ds = ds.map(_parse_example, num_parallel_calls=AUTOTUNE)
        if is_unlabeled(part):
            ds = ds.map(lambda x, y: (x, tf.constant(UNLABELED, tf.int32)))
        return Examples(ds, decode.decode_image)

    def labels(self, part: str) -> np.ndarray:
        labels = self._scan(part)[1].labels
        return np.full_like(labels, UNLABELED) if is_unlabeled(part) else labels

    def skipped(self, part: str) -> list:
        return list(self._scan(part)[1].skipped)

    def num_classes(self) -> int:
        if self.data.num_classes > 0:
            return int(self.data.num_classes)
        if self.data.name in _KNOWN_NUM_CLASSES:
            return _KNOWN_NUM_CLASSES[self.data.name]
        logging.info("Scanning the TFRecord labels to count classes; set data.num_classes to skip.")
        part = split_parts(self.data.train_split)[0]
        return int(self.labels(part).max(initial=UNLABELED)) + 1
