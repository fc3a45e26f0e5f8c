"""Labels are class names end to end (issue 33, HIGH 3 and 4): a test split that lacks a
middle class is scored and inspected by name, through finetune and inspect."""

import csv
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_run_config

from amdim_tf import data as data_lib
from amdim_tf.errors import UserError
from amdim_tf.use import embed, finetune, inspect

COLOURS = {"blue": 2, "green": 1, "red": 0}  # the channel at 255 in each class's images


def _folder(root, splits, per_class=4):
    rng = np.random.default_rng(0)
    for split, classes in splits.items():
        for name in classes:
            os.makedirs(os.path.join(root, split, name))
            for i in range(per_class):
                image = rng.integers(0, 64, (32, 32, 3), dtype=np.uint8)
                image[..., COLOURS.get(name, 0)] = 255
                path = os.path.join(root, split, name, f"{i}.png")
                tf.io.write_file(path, tf.io.encode_png(image))
    return str(root)


def _data(root):
    data = tiny_run_config().data
    data.source, data.path, data.labels = "folder", root, "folders"
    return data


def test_finetune_scores_a_test_split_without_green_by_name(tmp_path):
    root = _folder(tmp_path, {"train": ["blue", "green", "red"], "test": ["blue", "red"]})
    source = data_lib.open_source(_data(root))
    names = finetune.class_names(source)
    _, y_test = finetune._eval_split(source, 0)
    assert names == ("blue", "green", "red")
    # Every red test image is "red" (2), as the classifier's columns name it; it was 1.
    assert sorted({names[i] for i in y_test.tolist()}) == ["blue", "red"]
    assert np.bincount(y_test, minlength=3).tolist() == [4, 0, 4]


def test_finetune_refuses_a_test_class_the_training_split_lacks(tmp_path):
    root = _folder(tmp_path, {"train": ["blue", "red"], "test": ["blue", "green", "red"]})
    source = data_lib.open_source(_data(root))
    with pytest.raises(UserError, match="'green'"):
        finetune._eval_split(source, 0)


def test_inspect_compares_names_not_numbers(tiny_run, tmp_path):
    """Features that cluster by class (one-hot of the class's name): no test image may be
    a mislabel. Before, every red test image was labelled 1 and voted 2: "red -> 2"."""
    root = _folder(tmp_path / "d", {"train": ["blue", "green", "red"], "test": ["blue", "red"]})
    dirs = []
    for split in ("train", "test"):
        out = str(tmp_path / split)
        embed.embed(tiny_run, _data(root), split, out, verbose=0, projector_examples=0, queries=0)
        with open(os.path.join(out, embed.INDEX_FILE)) as f:
            rows = list(csv.reader(f, delimiter="\t"))[1:]
        features = np.zeros((len(rows), 32), np.float32)  # the tiny encoder's width
        for i, (_, _, name) in enumerate(rows):
            features[i, sorted(COLOURS).index(name)] = 1.0
            features[i, 3 + i % 5] = 0.05  # no two rows identical
        np.save(os.path.join(out, "r1.npy"), features)
        dirs.append(out)
    summary = inspect.inspect_embeddings(dirs, str(tmp_path / "report"), k=3, top=0, verbose=False)
    assert sum(summary["counts"]["likely_mislabels"].values()) == 0, summary["counts"]

    # An index numbered on its own (as embed wrote the test split before): red is 1 there.
    tsv = os.path.join(dirs[1], embed.INDEX_FILE)
    with open(tsv) as f:
        header, *lines = f.read().splitlines()
    own = {"blue": 0, "red": 1}
    lines = [f"{i}\t{own[c]}\t{c}" for i, _, c in (line.split("\t") for line in lines)]
    with open(tsv, "w") as f:
        f.write("\n".join([header, *lines]) + "\n")
    summary = inspect.inspect_embeddings(dirs, str(tmp_path / "again"), k=3, top=0, verbose=False)
    assert sum(summary["counts"]["likely_mislabels"].values()) == 0, summary["counts"]


def test_inspect_names_the_predicted_class_from_the_reference_split():
    class Ix:  # what search.Index holds that labels_by_name reads
        def __init__(self, labels, class_names):
            self.labels, self.class_names = np.array(labels), class_names

    ref = Ix([0, 1, 2], ("blue", "green", "red"))
    test = Ix([0, 1, -1, 2], ("blue", "red", "purple"))
    assert inspect.labels_by_name(test, ref).tolist() == [0, 2, -1, -1]
    unnamed = Ix([0, 1], ("", ""))  # no class names: numbers are the names
    assert inspect.labels_by_name(unnamed, Ix([0, 1], ("", ""))).tolist() == [0, 1]
