"""Label budgets of the few-label protocol: per-class counts, class-balanced seeded
subsets, refusals that name the class or split, the held-out part of each subset."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_run_config

from amdim_tf.use import label_budgets

DIGITS = tuple(str(i) for i in range(10))


def write_npz(path, train_labels, class_names=("a", "b", "c")):
    rng = np.random.default_rng(0)
    jpegs = [
        tf.io.encode_jpeg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).numpy()
        for _ in train_labels
    ]
    offsets = np.cumsum([0] + [len(j) for j in jpegs]).astype(np.int64)
    blob = np.frombuffer(b"".join(jpegs), np.uint8)
    np.savez(
        path,
        train_jpeg=blob,
        train_offsets=offsets,
        train_labels=np.asarray(train_labels, np.int64),
        test_jpeg=blob,
        test_offsets=offsets,
        test_labels=np.asarray(train_labels, np.int64),
        class_names=np.array(class_names),
    )
    return str(path)


def npz_data(path):
    data = tiny_run_config().data
    data.source = "npz"
    data.path = path
    data.cache = False
    return data


def test_budgets_resolve_to_images_per_class():
    cifar = tuple(f"c{i}" for i in range(10))
    assert label_budgets.Budget(fraction=0.01).resolve(50000, cifar) == 50  # 1% = 500 images
    assert label_budgets.Budget(fraction=0.1).resolve(50000, cifar) == 500
    assert label_budgets.Budget(per_class=7).resolve(50000, cifar) == 7
    assert [b.name for b in label_budgets.parse_budgets(["0.01", "1.0"], ["50"])] == [
        "1%",
        "100%",
        "50/class",
    ]


def test_a_budget_below_one_per_class_names_a_class():
    with pytest.raises(ValueError, match=r"class 0 \('airplane'\) and 9 others"):
        label_budgets.Budget(fraction=0.0001).resolve(50000, ("airplane",) + DIGITS[1:])


@pytest.mark.parametrize("kwargs", [{}, {"fraction": 0.1, "per_class": 3}, {"fraction": 2.0}])
def test_malformed_budgets_are_refused(kwargs):
    with pytest.raises(ValueError, match="fraction"):
        label_budgets.Budget(**kwargs)


def test_no_budget_is_refused():
    with pytest.raises(ValueError, match="No label budget"):
        label_budgets.parse_budgets([], [])


def test_label_subsets_are_class_balanced_and_seeded():
    data = tiny_run_config().data
    x, y = label_budgets.labelled_subset(data, 3, seed=1, names=DIGITS)
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.float32
    assert np.bincount(y, minlength=10).tolist() == [3] * 10
    x_again, y_again = label_budgets.labelled_subset(data, 3, seed=1, names=DIGITS)
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_array_equal(y, y_again)
    x_other, _ = label_budgets.labelled_subset(data, 3, seed=2, names=DIGITS)
    assert not np.array_equal(np.sort(x.reshape(30, -1), 0), np.sort(x_other.reshape(30, -1), 0))


def test_a_class_without_labels_is_named(tmp_path):
    path = write_npz(tmp_path / "two_of_three.npz", [0, 1, 0, 1], ("cat", "dog", "emu"))
    with pytest.raises(ValueError, match=r"class 2 \('emu'\) has no labelled example"):
        label_budgets.labelled_subset(npz_data(path), 1, seed=1, names=("cat", "dog", "emu"))


def test_an_unlabelled_npz_is_refused(tmp_path):
    path = write_npz(tmp_path / "unlabelled.npz", [-1, -1, -1])
    with pytest.raises(ValueError, match="needs labelled images"):
        label_budgets.labelled_subset(npz_data(path), 1, seed=1, names=("a", "b", "c"))


def test_a_flat_folder_is_refused(tmp_path):
    for i in range(3):
        tf.io.write_file(
            str(tmp_path / f"{i}.png"), tf.io.encode_png(np.zeros((32, 32, 3), np.uint8))
        )
    data = tiny_run_config().data
    data.source, data.path = "folder", str(tmp_path)
    with pytest.raises(ValueError, match="needs labelled images.*class sub-directories"):
        label_budgets.labelled_subset(data, 1, seed=1, names=("a",))


def test_held_out_labels_are_a_stratified_seeded_part_of_each_class():
    y = np.repeat(np.arange(3), [10, 5, 1])
    train, held = label_budgets.holdout_split(y, 0.2, seed=1)
    assert np.bincount(y[held], minlength=3).tolist() == [2, 1, 0]  # never a whole class
    assert sorted([*train, *held]) == list(range(len(y)))
    assert np.array_equal(held, label_budgets.holdout_split(y, 0.2, seed=1)[1])
    assert not np.array_equal(held, label_budgets.holdout_split(y, 0.2, seed=2)[1])
