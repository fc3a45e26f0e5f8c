"""A folder as its user keeps it (issue 32) and labels named end to end (issue 33, HIGH 3-4).

Reading rules: `data.labels="none"` (the default) reads every image under data.path,
sub-folders included, as unlabelled; `"folders"` makes its sub-directories the classes.
Either way each file named as an image is read, or counted and named as skipped with its
reason, and an ambiguous layout is said in one line. Labels: every labelled split is
numbered by the training split's class names.
"""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_data
from photo_folder import BAD, GOOD_LOOSE, GOOD_NESTED, make_photos

from amdim_tf import data as data_lib
from amdim_tf.errors import UserError


def _rel(root, paths):
    return sorted(os.path.relpath(os.fsdecode(p), root) for p in paths)


@pytest.fixture
def photos(tmp_path):
    return make_photos(tmp_path / "photos")


def test_default_reads_every_image_under_the_path_as_unlabelled(photos, caplog):
    source = data_lib.open_source(make_data(source="folder", path=photos))
    with caplog.at_level(logging.WARNING):
        split = data_lib.pretrain_split(source)
        assert split == "unlabeled"
        files = source.examples("unlabeled").ds.map(lambda p, y: p)
        read = _rel(photos, files.as_numpy_iterator())
    assert read == sorted(GOOD_LOOSE + GOOD_NESTED)  # loose, nested, jpg/png/webp, gray
    assert _rel(photos, source.skipped("unlabeled")) == sorted(BAD)
    assert set(source.labels("unlabeled").tolist()) == {-1}
    assert not source.has_labels()
    # One line says what is read and how to read sub-folders as classes instead.
    layout = [r.getMessage() for r in caplog.records if "data.labels" in r.getMessage()]
    assert (
        len(layout) == 1 and "10 images beside" in layout[0] and "data.labels=folders" in layout[0]
    )
    batch = next(iter(data_lib.make_pretrain_dataset(source, 4, seed=0)))
    assert batch[0][0].shape == (4, 32, 32, 3)  # grayscale and every size become 32x32x3


def test_a_labelled_split_of_unlabelled_data_is_refused_naming_the_key(photos):
    source = data_lib.open_source(make_data(source="folder", path=photos))
    with pytest.raises(UserError, match=r"data\.labels=folders"):
        source.labels("test")


def test_folders_reads_sub_folders_as_classes_and_names_the_loose_images(photos, caplog):
    data = make_data(source="folder", path=photos, labels="folders", eval_split="train")
    source = data_lib.open_source(data)
    with caplog.at_level(logging.WARNING):
        assert source.class_names() == ("holiday",)
        assert source.count("train") == len(GOOD_NESTED)
    skipped = _rel(photos, source.skipped("train"))
    assert skipped == sorted(GOOD_LOOSE + BAD)  # every file is read or named as skipped
    assert "outside its class folders" in caplog.text and "data.labels=none" in caplog.text


def test_folders_on_a_flat_folder_is_refused_naming_the_key(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    tf.io.write_file(str(flat / "a.png"), tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)))
    source = data_lib.open_source(make_data(source="folder", path=str(flat), labels="folders"))
    with pytest.raises(UserError, match=r"no class sub-directories.*data\.labels=none"):
        source.count("train")


def test_unknown_labels_value_is_refused(photos):
    with pytest.raises(UserError, match=r"data\.labels='classes'"):
        data_lib.open_source(make_data(source="folder", path=photos, labels="classes")).count(
            "unlabeled"
        )


def test_unlabeled_path_alone_is_pretraining_data(photos):
    source = data_lib.open_source(make_data(source="folder", path="", unlabeled_path=photos))
    assert data_lib.pretrain_split(source) == "unlabeled"
    assert data_lib.num_pretrain_examples(source) == len(GOOD_LOOSE + GOOD_NESTED)
    assert not source.has_labels()


# -- labels by name --------------------------------------------------------------------


def _png(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    tf.io.write_file(path, tf.io.encode_png(image))


def _split_folder(root, classes_per_split, n=2):
    for split, classes in classes_per_split.items():
        for c in classes:
            for i in range(n):
                _png(os.path.join(root, split, c, f"{i}.png"), hash((split, c, i)) % 1000)
    return str(root)


def test_a_test_split_missing_a_middle_class_is_numbered_by_the_training_names(tmp_path):
    root = _split_folder(tmp_path, {"train": ["blue", "green", "red"], "test": ["blue", "red"]})
    source = data_lib.open_source(make_data(source="folder", path=root, labels="folders"))
    assert source.class_names("test") == source.class_names() == ("blue", "green", "red")
    assert source.labels("test").tolist() == [0, 0, 2, 2]  # red is 2 in every split
    _, y = next(iter(data_lib.make_eval_dataset(source, "test", 8)))
    assert sorted(y.numpy().tolist()) == [0, 0, 2, 2]


def test_a_test_split_with_a_class_unknown_to_training_is_refused_by_name(tmp_path):
    root = _split_folder(tmp_path, {"train": ["blue", "red"], "test": ["blue", "purple", "red"]})
    source = data_lib.open_source(make_data(source="folder", path=root, labels="folders"))
    assert source.labels("train").tolist() == [0, 0, 1, 1]
    with pytest.raises(UserError, match=r"'purple'.*not a class of data\.train_split"):
        source.labels("test")


def test_npz_and_tfrecord_splits_share_one_index_space(tmp_path):
    """npz and tfrecord keep one index space: a label is the number stored with the record,
    the names (npz: class_names) one tuple for every split. (tfds: the builder's label
    names, one for every split; not run here, it needs a prepared dataset.)"""
    blob = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy()
    path = str(tmp_path / "d.npz")
    arrays = {"class_names": np.array(["blue", "green", "red"])}
    splits = {"train": [0, 1, 2], "test": [0, 2]}
    for split, labels in splits.items():
        arrays[f"{split}_jpeg"] = np.frombuffer(blob * len(labels), np.uint8)
        arrays[f"{split}_offsets"] = np.arange(len(labels) + 1) * len(blob)
        arrays[f"{split}_labels"] = np.array(labels)
        with tf.io.TFRecordWriter(str(tmp_path / f"{split}-0")) as writer:
            for label in labels:
                feature = {
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[blob])),
                    "image/class/label": tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[label])
                    ),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    np.savez(path, **arrays)
    source = data_lib.open_source(make_data(source="npz", path=path))
    assert source.labels("test").tolist() == [0, 2]
    assert source.class_names("test") == source.class_names() == ("blue", "green", "red")
    pattern = str(tmp_path / "{split}-*")
    source = data_lib.open_source(make_data(source="tfrecord", path=pattern, num_classes=3))
    assert source.labels("test").tolist() == [0, 2] and source.num_classes() == 3


def test_an_empty_file_is_named_as_empty_and_a_missing_path_names_the_flag(photos):
    from amdim_tf.data.sources import folder

    assert folder._unreadable(os.fsencode(os.path.join(photos, "empty.png")), 2**25) == (
        "an empty file (0 bytes)"
    )
    missing = make_data(source="folder", path="../shared/nowhere")
    with pytest.raises(FileNotFoundError, match=r"fix data\.path \(--config\.data\.path=PATH\)"):
        data_lib.open_source(missing).count("unlabeled")
    with pytest.raises(FileNotFoundError, match=r"--config\.data\.path=DIR.*data\.unlabeled_path"):
        data_lib.open_source(make_data(source="folder", path="")).count("unlabeled")


def test_a_folder_without_images_names_the_path_and_its_key(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not an image")
    source = data_lib.open_source(make_data(source="folder", path=str(tmp_path / "notes")))
    with pytest.raises(UserError, match=r"No decodable image files.*notes \(data\.path\)"):
        source.count("unlabeled")
