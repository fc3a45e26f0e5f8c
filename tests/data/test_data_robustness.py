"""Tests for amdim_tf.data on bad and awkward data (issue 13).

Large images are decoded at a bounded size, evaluation can sample classes evenly, broken
npz/TFRecord files fail with one-line errors or are skipped with a count, and file names
that are not UTF-8 are read like any other.
"""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_data

from amdim_tf import data as data_lib
from amdim_tf.data import decode

BATCH = 4


def _image(h, w, c, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)


def _smooth_image(h, w, seed):
    """A gradient with a little noise: large but quick to encode and decode."""
    rows = np.linspace(0, 200, h, dtype=np.float32)[:, None, None]
    cols = np.linspace(0, 200, w, dtype=np.float32)[None, :, None]
    tint = np.array([1.0, 0.6, 0.3], np.float32)
    noise = np.random.default_rng(seed).integers(0, 40, size=(h, w, 1), dtype=np.uint8)
    return ((rows + cols) * tint / 2).astype(np.uint8) + noise


def _jpeg(image):
    return tf.io.encode_jpeg(image).numpy()


def _png(image):
    return tf.io.encode_png(image).numpy()


def _write(path, contents):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(contents)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _first_pretrain_batch(data):
    (v1, v2), labels = next(iter(data_lib.make_pretrain_dataset(data, BATCH, seed=0)))
    assert np.all(np.isfinite(v1.numpy())) and np.all(np.isfinite(v2.numpy()))
    return labels.numpy()


def _eval_labels(data, split, **kwargs):
    ds = data_lib.make_eval_dataset(data, split, BATCH, **kwargs)
    return np.concatenate([y.numpy() for _, y in ds])


# -- 2. bounded decoding -----------------------------------------------------------------


def test_large_images_decode_bounded_and_small_ones_exactly(tmp_path):
    root = tmp_path / "big"
    big_jpeg = _jpeg(_smooth_image(3000, 4000, 0))
    _write(str(root / "a" / "big.jpg"), big_jpeg)
    _write(str(root / "a" / "wide.png"), _png(_smooth_image(300, 700, 1)))
    small = _jpeg(_image(32, 32, 3, 2))
    _write(str(root / "b" / "small.jpg"), small)
    _write(str(root / "b" / "mid.jpg"), _jpeg(_smooth_image(480, 512, 3)))

    # 4000 px: decoded at 1/4 scale in the DCT (1000x750), then resized to 512 px.
    assert decode.decode_image(tf.constant(big_jpeg)).shape == (384, 512, 3)
    wide = decode.decode_file(tf.constant(str(root / "a" / "wide.png")))
    assert wide.shape == (219, 512, 3) and wide.dtype == tf.uint8
    # At or below the bound: exactly the full decode, as before.
    exact = tf.io.decode_jpeg(small, channels=3, dct_method="INTEGER_ACCURATE")
    np.testing.assert_array_equal(decode.decode_image(tf.constant(small)).numpy(), exact)
    assert decode.decode_file(tf.constant(str(root / "b" / "mid.jpg"))).shape == (480, 512, 3)

    data = make_data(
        source="folder", labels="folders", path=str(root), image_size=64, eval_split="train"
    )
    assert data_lib.num_examples(data, "train") == 4
    assert set(_first_pretrain_batch(data)) == {0, 1}
    assert sorted(_eval_labels(data, "test").tolist()) == [0, 0, 1, 1]


# -- 3. class-balanced evaluation sample -------------------------------------------------


def test_balanced_eval_sample_on_class_sorted_cifar(cifar_npz):
    data = make_data(source="npz", path=cifar_npz, cache=False)
    first = _eval_labels(data, "test", max_examples=40)
    assert len(set(first.tolist())) == 1  # the copy is sorted by class: why this exists

    def sample(seed):
        ds = data_lib.make_eval_dataset(
            data, "test", 16, max_examples=40, sample_seed=seed, balanced=True
        )
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
        return np.concatenate(images), np.concatenate(labels)

    images, labels = sample(1)
    assert np.bincount(labels, minlength=10).tolist() == [4] * 10
    assert len(set(labels[:16].tolist())) > 3  # batches mix classes
    again_images, again_labels = sample(1)
    np.testing.assert_array_equal(labels, again_labels)
    np.testing.assert_array_equal(images, again_images)
    other_images, _ = sample(2)
    assert not np.array_equal(np.sort(images, axis=0), np.sort(other_images, axis=0))


# -- 4. npz validation ---------------------------------------------------------------------


def _npz_arrays(n=6):
    jpegs = [_jpeg(_image(8, 8, 3, i)) for i in range(n)]
    return {
        "train_jpeg": np.frombuffer(b"".join(jpegs), np.uint8),
        "train_offsets": np.cumsum([0] + [len(j) for j in jpegs]).astype(np.int64),
        "train_labels": (np.arange(n) % 3).astype(np.uint8),
        "class_names": np.array(["a", "b", "c"]),
    }


def _save_npz(tmp_path, **changes):
    arrays = _npz_arrays()
    arrays.update(changes)
    path = str(tmp_path / "data.npz")
    np.savez(path, **arrays)
    return path


def _broken_offsets():
    offsets = _npz_arrays()["train_offsets"].copy()
    offsets[[2, 3]] = offsets[[3, 2]]
    return offsets


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(train_offsets=_broken_offsets()), r"train_offsets decreases at entry 2 .*cumsum"),
        (
            dict(train_offsets=_npz_arrays()["train_offsets"] + 5),
            r"train_offsets span 5\.\..*bytes",
        ),
        (
            dict(train_jpeg=_npz_arrays()["train_jpeg"][None]),
            r"train_jpeg is a 2-D uint8 .*1-D uint8",
        ),
        (
            dict(train_jpeg=_npz_arrays()["train_jpeg"].astype(np.int64)),
            r"train_jpeg is a 1-D int64",
        ),
        (dict(train_labels=np.zeros(6, np.float32)), r"train_labels is a 1-D float32 .*integer"),
        (dict(train_labels=np.array([0, 1, 2, 3, 0, 1])), r"train_labels\[3\] is 3; .*0\.\.2"),
        (dict(train_labels=np.array([0, 1, -3, 0, 0, 1])), r"train_labels\[2\] is -3"),
    ],
)
def test_npz_arrays_are_checked_with_one_line_errors(tmp_path, changes, message):
    path = _save_npz(tmp_path, **changes)
    with pytest.raises(ValueError, match=message) as error:
        data_lib.load_npz(path)
    assert path in str(error.value) and "\n" not in str(error.value)


def test_npz_unlabeled_records_are_allowed(tmp_path):
    path = _save_npz(tmp_path, train_labels=np.array([0, 1, -1, 2, -1, 1]))
    data = make_data(source="npz", path=path, eval_split="train")
    assert data_lib.num_examples(data, "train") == 6
    assert sorted(_eval_labels(data, "train").tolist()) == [0, 1, 1, 2]


def test_npz_corrupt_jpeg_is_skipped_and_counted(tmp_path, caplog):
    arrays = _npz_arrays()
    blob = arrays["train_jpeg"].copy()
    start, end = arrays["train_offsets"][2], arrays["train_offsets"][3]
    blob[start + 20 : end] = 7  # header intact, image data garbage
    path = _save_npz(tmp_path, train_jpeg=blob)
    data = make_data(source="npz", path=path)
    with caplog.at_level(logging.WARNING):
        assert data_lib.num_examples(data, "train") == 5
    assert "Skipping 1 of 6 records" in caplog.text and "data.npz" in caplog.text
    _first_pretrain_batch(data)
    assert _eval_labels(data, "train").tolist() == [0, 1, 0, 1, 2]  # record 2 is gone
    with pytest.raises(ValueError, match=r"record 2 \(.*data\.npz.*data\.strict=False"):
        data_lib.num_examples(make_data(source="npz", path=path, strict=True), "train")


# -- 4. TFRecord validation ----------------------------------------------------------------


def _example(encoded=None, label=0, key="image/encoded"):
    feature = {"image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
    if encoded is not None:
        feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_records(path, records):
    """Writes the records; returns each one's data offset in the file."""
    offsets, position = [], 0
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
            offsets.append(position + 12)  # length (8) + length CRC (4), then the data
            position += 16 + len(record)
    return offsets


def _good_records(n):
    return [_example(_jpeg(_image(16, 16, 3, i)), label=i) for i in range(n)]


def test_tfrecord_corrupt_byte_skips_the_rest_of_that_file_only(tmp_path, caplog):
    _write_records(str(tmp_path / "train-0"), _good_records(3))
    path = str(tmp_path / "train-1")
    offsets = _write_records(path, _good_records(6))
    contents = bytearray(_read(path))
    contents[offsets[3] + 5] ^= 0xFF  # record 3's data no longer matches its CRC
    _write(path, bytes(contents))
    data = make_data(source="tfrecord", path=str(tmp_path / "{split}-*"), num_classes=0)
    with caplog.at_level(logging.WARNING):
        assert data_lib.num_examples(data, "train") == 6  # 3 + the 3 before the flip
    assert "train-1" in caplog.text and "corrupt after record 3" in caplog.text
    for _ in range(3):  # every later run, and every resume, reads the same records
        assert _eval_labels(data, "train").tolist() == [0, 1, 2, 0, 1, 2]
    _first_pretrain_batch(data)
    strict = make_data(source="tfrecord", path=str(tmp_path / "{split}-*"), strict=True)
    with pytest.raises(ValueError, match=r"train-1.*corrupt after record 3.*data\.strict"):
        data_lib.num_examples(strict, "train")


def test_tfrecord_truncated_file(tmp_path, caplog):
    path = str(tmp_path / "train-0")
    _write_records(path, _good_records(5))
    _write(path, _read(path)[:-10])
    data = make_data(source="tfrecord", path=str(tmp_path / "{split}-*"), num_classes=0)
    with caplog.at_level(logging.WARNING):
        assert data_lib.num_examples(data, "train") == 4
    assert "corrupt after record 4" in caplog.text
    assert data_lib.num_classes(data) == 4
    _first_pretrain_batch(data)


def test_tfrecord_undecodable_image_is_skipped_and_counted(tmp_path, caplog):
    records = _good_records(5)
    records[1] = _example(b"\xff\xd8\xff garbage, not a JPEG", label=1)
    _write_records(str(tmp_path / "train-0"), records)
    data = make_data(source="tfrecord", path=str(tmp_path / "{split}-*"))
    with caplog.at_level(logging.WARNING):
        assert data_lib.num_examples(data, "train") == 4
    assert "Skipping 1 of 5 TFRecords" in caplog.text and "train-0' record 1" in caplog.text
    assert _eval_labels(data, "train").tolist() == [0, 2, 3, 4]
    _first_pretrain_batch(data)
    strict = make_data(source="tfrecord", path=str(tmp_path / "{split}-*"), strict=True)
    with pytest.raises(
        ValueError, match=r"Cannot decode TFRecord '.*train-0' record 1 \(.*data\.strict"
    ):
        data_lib.num_examples(strict, "train")


def test_tfrecord_without_image_encoded_names_file_and_keys(tmp_path):
    records = [_example(_jpeg(_image(16, 16, 3, i)), key="image/raw") for i in range(3)]
    _write_records(str(tmp_path / "train-0"), records)
    data = make_data(source="tfrecord", path=str(tmp_path / "{split}-*"))
    with pytest.raises(
        ValueError, match=r"train-0' record 0 .*'image/class/label', 'image/encoded'"
    ):
        data_lib.make_pretrain_dataset(data, BATCH, seed=0)


# -- 5. file names that are not UTF-8 ----------------------------------------------------


def test_folder_reads_file_names_that_are_not_utf8(tmp_path):
    root = os.fsencode(str(tmp_path / "names"))
    for directory in (b"cat", b"dog"):
        os.makedirs(os.path.join(root, directory))
    _write(os.path.join(root, b"cat", b"ok.png"), _png(_image(32, 32, 3, 0)))
    _write(os.path.join(root, b"cat", b"bad\xff.jpg"), _jpeg(_image(32, 32, 3, 1)))
    _write(os.path.join(root, b"dog", b"caf\xe9.png"), _png(_image(32, 32, 3, 2)))
    data = make_data(source="folder", labels="folders", path=os.fsdecode(root), eval_split="train")
    assert data_lib.num_examples(data, "train") == 3
    assert sorted(_eval_labels(data, "train").tolist()) == [0, 0, 1]
    assert set(_first_pretrain_batch(data)) <= {0, 1}
