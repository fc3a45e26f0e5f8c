"""Seeded samples: the held-out split, the evaluation views and pixels, and the chosen
pretraining examples each equal the copy they replaced (the seeded results do not move)."""

import numpy as np
from conftest import make_data

from amdim_tf import data as data_lib
from amdim_tf.data import augment, samples


def _old_finetune_holdout(y, fraction, seed):
    """use/finetune.holdout_split before it called `samples.held_out`."""
    rng = np.random.default_rng([seed, 7])
    train, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        held.extend(idx[:n])
        train.extend(idx[n:])
    return np.sort(train), np.sort(held)


def test_held_out_is_stratified_seeded_and_equals_the_finetune_copy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    y[:1] = 9  # a class of one image stays whole in training
    held = samples.held_out(y, 0.2, [3, 7])
    train_rows, held_rows = _old_finetune_holdout(y, 0.2, 3)
    np.testing.assert_array_equal(np.flatnonzero(held), held_rows)
    np.testing.assert_array_equal(np.flatnonzero(~held), train_rows)
    for c in np.unique(y):
        n = int(np.sum(y == c))
        assert np.sum(held[y == c]) == min(max(round(0.2 * n), 1), n - 1)
    assert not np.array_equal(held, samples.held_out(y, 0.2, 4))


def test_eval_pixels_are_the_eval_views_before_normalising():
    data = make_data()
    source = data_lib.open_source(data)
    views, labels = samples.eval_views(source, "test", 12, seed=0)
    ds = data_lib.make_eval_dataset(source, "test", 5, max_examples=12, sample_seed=0)
    want = [(x.numpy(), y.numpy()) for x, y in ds]
    np.testing.assert_array_equal(views, np.concatenate([w[0] for w in want]))
    np.testing.assert_array_equal(labels, np.concatenate([w[1] for w in want]))
    pixels, same = samples.eval_pixels(source, "test", 12, seed=0, uint8=True)
    preset = augment.preset_for(data.augment, data.image_size)
    unit = augment.denormalise(views, preset).numpy()
    # The copy edge.labelled_pixels held: round(x * 255) without a clip.
    np.testing.assert_array_equal(pixels, np.round(unit * 255.0).astype(np.uint8))
    np.testing.assert_array_equal(same, labels)
    balanced, y = samples.eval_views(source, "test", 10, seed=1, balanced=True)
    assert np.bincount(y, minlength=10).tolist() == [1] * 10
    empty, none = samples.eval_views(source, "test", 0, seed=0, batch=4)
    assert len(empty) == len(none) > 0  # n=0 is the whole split


def test_chosen_examples_are_a_seeded_uniform_choice():
    source = data_lib.open_source(make_data())
    total = source.count("train")
    chosen = samples.chosen_examples(source, "train", 9, seed=2)
    positions = np.concatenate([[int(i) for i, _ in ds.as_numpy_iterator()] for ds in chosen])
    rng = np.random.default_rng(2)
    np.testing.assert_array_equal(positions, np.sort(rng.choice(total, 9, replace=False)))


def test_a_folders_held_out_split_is_the_same_rule_with_its_own_seed():
    from amdim_tf.data.sources import folder

    labels = np.random.default_rng(1).integers(0, 4, 90)
    rng = np.random.default_rng(folder.HOLDOUT_SEED)  # the copy folder.py held
    want = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = min(max(round(folder.HOLDOUT_FRACTION * len(rows)), 1), len(rows) - 1)
        want[rng.permutation(rows)[:k]] = True
    np.testing.assert_array_equal(folder.held_out(labels), want)
