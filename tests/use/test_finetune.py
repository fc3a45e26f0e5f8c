"""Few-label evaluation: label budgets, the fine-tuning recipe, outputs and bad input."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import one_error_line, run_command, tiny_run_config

from amdim_tf import config_lib
from amdim_tf import data as data_lib
from amdim_tf.data import augment
from amdim_tf.run.loader import untrained_encoder
from amdim_tf.run.pixels import PixelClassifier
from amdim_tf.run.run_config import load_run_config, prepare_workdir
from amdim_tf.use import evaluate, finetune

DIGITS = tuple(str(i) for i in range(10))
TINY_RECIPE = finetune.Recipe(epochs=1, min_steps=3, max_steps=3, batch_size=8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A work directory as amdim-train leaves it: config.json and an encoder checkpoint.

    The encoder is untrained (seconds instead of a pretraining), with non-trivial BN
    statistics so that BN modes are told apart."""
    config = tiny_run_config()
    workdir = str(tmp_path_factory.mktemp("run"))
    prepare_workdir(config, workdir)
    encoder = untrained_encoder(config)
    rng = np.random.default_rng(0)
    for v in encoder.non_trainable_variables:
        if "moving_mean" in v.path:
            v.assign(rng.normal(0.0, 0.1, v.shape).astype("float32"))
        elif "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
    holder = tf.Module()
    holder.encoder = encoder
    ckpt = tf.train.Checkpoint(model=holder)
    tf.train.CheckpointManager(ckpt, os.path.join(workdir, "checkpoints"), 1).save(1)
    return workdir


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


# -- label budgets --------------------------------------------------------------------


def test_budgets_resolve_to_images_per_class():
    cifar = tuple(f"c{i}" for i in range(10))
    assert finetune.Budget(fraction=0.01).resolve(50000, cifar) == 50  # 1% = 500 images
    assert finetune.Budget(fraction=0.1).resolve(50000, cifar) == 500
    assert finetune.Budget(per_class=7).resolve(50000, cifar) == 7
    assert [b.name for b in finetune.parse_budgets(["0.01", "1.0"], ["50"])] == [
        "1%",
        "100%",
        "50/class",
    ]


def test_a_budget_below_one_per_class_names_a_class():
    with pytest.raises(ValueError, match=r"class 0 \('airplane'\) and 9 others"):
        finetune.Budget(fraction=0.0001).resolve(50000, ("airplane",) + DIGITS[1:])


@pytest.mark.parametrize("kwargs", [{}, {"fraction": 0.1, "per_class": 3}, {"fraction": 2.0}])
def test_malformed_budgets_are_refused(kwargs):
    with pytest.raises(ValueError, match="fraction"):
        finetune.Budget(**kwargs)


def test_no_budget_is_refused():
    with pytest.raises(ValueError, match="No label budget"):
        finetune.parse_budgets([], [])


def test_label_subsets_are_class_balanced_and_seeded():
    data = tiny_run_config().data
    x, y = finetune.labelled_subset(data, 3, seed=1, names=DIGITS)
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.float32
    assert np.bincount(y, minlength=10).tolist() == [3] * 10
    x_again, y_again = finetune.labelled_subset(data, 3, seed=1, names=DIGITS)
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_array_equal(y, y_again)
    x_other, _ = finetune.labelled_subset(data, 3, seed=2, names=DIGITS)
    assert not np.array_equal(np.sort(x.reshape(30, -1), 0), np.sort(x_other.reshape(30, -1), 0))


def test_a_class_without_labels_is_named(tmp_path):
    path = write_npz(tmp_path / "two_of_three.npz", [0, 1, 0, 1], ("cat", "dog", "emu"))
    with pytest.raises(ValueError, match=r"class 2 \('emu'\) has no labelled example"):
        finetune.labelled_subset(npz_data(path), 1, seed=1, names=("cat", "dog", "emu"))


def test_an_unlabelled_npz_is_refused(tmp_path):
    path = write_npz(tmp_path / "unlabelled.npz", [-1, -1, -1])
    with pytest.raises(ValueError, match="needs labelled images"):
        finetune.labelled_subset(npz_data(path), 1, seed=1, names=("a", "b", "c"))


def test_a_flat_folder_is_refused(tmp_path):
    for i in range(3):
        tf.io.write_file(
            str(tmp_path / f"{i}.png"), tf.io.encode_png(np.zeros((32, 32, 3), np.uint8))
        )
    data = tiny_run_config().data
    data.source, data.path = "folder", str(tmp_path)
    with pytest.raises(ValueError, match="needs labelled images.*class sub-directories"):
        finetune.labelled_subset(data, 1, seed=1, names=("a",))


# -- the recipe -----------------------------------------------------------------------


def test_light_augment_is_seeded_eagerly_and_in_tf_data():
    view = augment.eval_view(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3), "cifar")
    seeds = tf.constant([[0, i] for i in range(8)], tf.int64)
    eager = np.stack([finetune.light_augment(view, s).numpy() for s in seeds])
    mapped = np.stack(
        list(tf.data.Dataset.from_tensor_slices(seeds).map(
            lambda s: finetune.light_augment(view, s)
        ).as_numpy_iterator())
    )  # fmt: skip
    np.testing.assert_array_equal(eager, mapped)
    assert eager.shape == (8, 32, 32, 3)
    # Geometry only: the pixel values are a permutation/reflection of the input's.
    assert sum(not np.array_equal(e, view.numpy()) for e in eager) >= 4
    assert np.isin(eager, view.numpy()).all()


def classifier(seed=0):
    encoder = untrained_encoder(tiny_run_config(), seed=seed)
    return finetune.build_classifier(encoder, 10, seed), encoder


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


def changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables, strict=True)]


def bn_statistics(encoder):
    return [v for v in encoder.non_trainable_variables if "moving_" in v.path]


def test_frozen_bn_keeps_pretraining_statistics_while_the_backbone_learns():
    x, y = finetune.labelled_subset(tiny_run_config().data, 1, seed=1, names=DIGITS)
    model, encoder = classifier()
    stats, gammas = bn_statistics(encoder), [v for v in encoder.variables if "gamma" in v.path]
    convs = [v for v in encoder.trainable_variables if "to_r1" in v.path and "kernel" in v.path]
    before = snapshot(stats + gammas + convs)
    finetune.train_classifier(model, encoder, x, y, TINY_RECIPE, 1, backbone_lr=1e-4, bn="frozen")
    moved = changed(before, stats + gammas + convs)
    assert not any(moved[: len(stats) + len(gammas)])
    assert all(moved[len(stats) + len(gammas) :])


def test_bn_train_mode_updates_statistics():
    x, y = finetune.labelled_subset(tiny_run_config().data, 1, seed=1, names=DIGITS)
    model, encoder = classifier()
    stats = bn_statistics(encoder)
    before = snapshot(stats)
    finetune.train_classifier(model, encoder, x, y, TINY_RECIPE, 1, backbone_lr=1e-4, bn="train")
    assert all(changed(before, stats))


def test_backbone_and_head_have_their_own_learning_rates():
    x, y = finetune.labelled_subset(tiny_run_config().data, 1, seed=1, names=DIGITS)
    model, encoder = classifier()
    head = model.get_layer("head").trainable_variables
    before_enc, before_head = snapshot(encoder.variables), snapshot(head)
    finetune.train_classifier(model, encoder, x, y, TINY_RECIPE, 1, backbone_lr=0.0, bn="frozen")
    assert not any(changed(before_enc, encoder.variables))
    assert all(changed(before_head, head))


def test_fine_tuning_learns_digits():
    """A random tiny encoder trained end to end on 10 digits per class: well above the
    10% of chance (observed 45-55% on 100 test images; asserted 25%)."""
    data = tiny_run_config().data
    x, y = finetune.labelled_subset(data, 10, seed=1, names=DIGITS)
    x_test, y_test = finetune._eval_split(data, 100)
    model, encoder = classifier()
    recipe = finetune.Recipe(epochs=1, min_steps=150, max_steps=150, batch_size=16, head_lr=1e-2)
    info = finetune.train_classifier(model, encoder, x, y, recipe, 1, backbone_lr=1e-2, bn="train")
    assert info["steps"] == 150 and np.isfinite(info["loss"])
    assert finetune.accuracy(model, x_test, y_test) > 0.25


# -- linear probe, then fine-tune; selection on held-out labels -----------------------


@pytest.mark.parametrize("k", [2, 3])
def test_the_linear_probe_folds_into_the_head(k):
    """The head a fine-tuning run starts from gives the frozen probe's probabilities."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (60, 5)).astype(np.float32)
    y = np.arange(60) % k
    x[:, 0] += 2 * y  # separable enough to be more than a constant
    probe = evaluate.fit_linear(x, y)
    kernel, bias = evaluate.linear_weights(probe, k)
    assert kernel.shape == (5, k) and bias.shape == (k,)
    probs = tf.nn.softmax(x @ kernel + bias).numpy()
    np.testing.assert_allclose(probs, probe.predict_proba(x), atol=1e-5)
    with pytest.raises(ValueError, match="saw classes"):
        evaluate.linear_weights(probe, k + 1)


def test_held_out_labels_are_a_stratified_seeded_part_of_each_class():
    y = np.repeat(np.arange(3), [10, 5, 1])
    train, held = finetune.holdout_split(y, 0.2, seed=1)
    assert np.bincount(y[held], minlength=3).tolist() == [2, 1, 0]  # never a whole class
    assert sorted([*train, *held]) == list(range(len(y)))
    assert np.array_equal(held, finetune.holdout_split(y, 0.2, seed=1)[1])
    assert not np.array_equal(held, finetune.holdout_split(y, 0.2, seed=2)[1])


def test_training_ends_at_its_best_held_out_step():
    data = tiny_run_config().data
    x, y = finetune.labelled_subset(data, 4, seed=1, names=DIGITS)
    train, held = finetune.holdout_split(y, 0.25, seed=1)
    model, encoder = classifier()
    recipe = finetune.Recipe(epochs=1, min_steps=12, max_steps=12, batch_size=8, evals=4)
    info = finetune.train_classifier(
        model, encoder, x[train], y[train], recipe, 1, backbone_lr=1e-3, bn="train",
        held_out=(x[held], y[held]),
    )  # fmt: skip
    assert [n for n, _ in info["curve"]] == [0, 3, 6, 9, 12]
    best = max(acc for _, acc in info["curve"])
    assert info["val_acc"] == best
    assert info["best_step"] == next(n for n, acc in info["curve"] if acc == best)
    assert finetune.accuracy(model, x[held], y[held]) == best  # the best step's weights


def test_fine_tuned_arm_is_the_frozen_probe_when_training_cannot_beat_it(run_dir, tmp_path):
    """LP-FT by construction: a candidate that cannot move (no backbone lr, a head lr of
    1e-12) never beats step 0 on the held-out labels, so the fine-tuned arm is the
    frozen arm's own classifier and scores what it scores."""
    recipe = finetune.Recipe(
        epochs=1, min_steps=3, max_steps=3, batch_size=8, head_lr=1e-12,
        candidates=(("frozen", 0.0),),
    )  # fmt: skip
    result = finetune.run_few_label_evaluation(
        run_dir, str(tmp_path / "out"), finetune.parse_budgets([], ["5"]),
        arms=("frozen", "finetune"), recipe=recipe, max_test=100,
    )  # fmt: skip
    frozen, tuned = result["rows"]
    assert tuned["selected"] == "linear probe" and tuned["n_held_out"] == 10
    assert abs(tuned["test_acc"] - frozen["test_acc"]) <= 1 / 100
    (candidate,) = tuned["candidates"]
    assert candidate["best_step"] == 0 and len(candidate["curve"]) == 4


@pytest.mark.parametrize("gain_in_images, selected", [(1, "linear probe"), (3, "bn train")])
def test_a_candidate_must_beat_the_probe_by_more_than_the_held_out_noise(
    run_dir, monkeypatch, gain_in_images, selected
):
    """20 held-out labels at a probe accuracy of 0.75: one standard error is 9.7 points,
    so a candidate one image (5 points) better stays behind the probe and one three
    images (15 points) better is selected."""
    n_held, probe = 20, 0.75

    def fake_training(model, encoder, x, y, recipe, seed, backbone_lr, bn, held_out=None):
        acc = probe + gain_in_images / n_held
        return {"best_step": 5, "val_acc": acc, "curve": [(0, probe), (5, acc)]}

    monkeypatch.setattr(finetune, "train_classifier", fake_training)
    config = load_run_config(run_dir)
    x = np.random.default_rng(0).normal(size=(100, 32, 32, 3)).astype(np.float32)  # views
    y = np.tile(np.arange(10), 10)
    train, held = np.arange(80), np.arange(80, 100)
    features = finetune._features(untrained_encoder(config), x, y)[0]
    probe_clf = evaluate.fit_linear(features, y, seed=1)
    _, info = finetune._fine_tune(
        lambda: untrained_encoder(config), features, probe_clf, x, y, train, held,
        tuple(str(i) for i in range(10)), finetune.Recipe(candidates=(("train", 1.0),)), 1,
    )  # fmt: skip
    assert info["margin"] == pytest.approx((probe * (1 - probe) / n_held) ** 0.5)
    assert info["selected"].startswith(selected)


def test_candidates_parse_from_the_command_line():
    assert finetune.parse_candidates(["frozen:0.1", "train:1"]) == (
        ("frozen", 0.1),
        ("train", 1.0),
    )
    with pytest.raises(ValueError, match="BN:MULTIPLIER"):
        finetune.parse_candidates(["frozen"])
    with pytest.raises(ValueError, match="BatchNorm mode"):
        finetune.Recipe(candidates=(("adapt", 0.1),))


# -- the whole evaluation -------------------------------------------------------------


def test_evaluation_writes_table_plot_and_a_servable_classifier(run_dir, tmp_path):
    out = str(tmp_path / "out")
    result = finetune.run_few_label_evaluation(
        run_dir,
        out,
        finetune.parse_budgets([], ["1", "2"]),
        seeds=(1, 2),
        recipe=TINY_RECIPE,
        data_overrides={"data.eval_split": "test"},
        max_test=40,
    )
    with open(os.path.join(out, "finetune.json")) as f:
        saved = json.load(f)
    assert len(saved["rows"]) == 3 * 2 * 2  # arms x budgets x seeds
    assert {r["n_labels"] for r in saved["rows"]} == {10, 20}
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in saved["rows"]) and saved["n_test"] == 40
    assert saved["saved_classifier_budget"] == "2/class"
    with open(os.path.join(out, "finetune.md")) as f:
        table = f.read()
    assert "2 seeds" in table and all(t in table for t in finetune.ARM_TITLES.values())
    assert result["table"].strip() == table.strip()
    with open(os.path.join(out, "finetune.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # Issue 20 trap 2: the .keras classifier took normalised images and returned logits
    # (uint8 pixels scored 46.9%, [0, 1] 9.4%); now the pixel contract of every artifact.
    model = keras.saving.load_model(os.path.join(out, "classifier.keras"))
    assert isinstance(model, PixelClassifier) and model.class_names == DIGITS
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    inputs = augment.normalise(pixels.astype(np.float32) / 255.0, "cifar")
    expected = tf.nn.softmax(model.classifier(inputs, training=False)).numpy()
    np.testing.assert_allclose(model(pixels), expected, atol=1e-5)
    np.testing.assert_allclose(model(pixels.astype(np.float32)), expected, atol=1e-5)
    loaded = tf.saved_model.load(os.path.join(out, "export", "1"))
    got = loaded.signatures["classify"](images=tf.constant(pixels))
    np.testing.assert_allclose(got["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(got["probabilities"].numpy().sum(1), 1.0, atol=1e-5)
    # Issue 20 trap 7: class_names came tiled [B, K]; now the predicted name per image.
    want = [DIGITS[i] for i in expected.argmax(1)]
    assert got["class_name"].numpy().astype(str).tolist() == want
    assert model.classify(pixels)["class_name"].numpy().astype(str).tolist() == want
    big = np.random.default_rng(1).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        loaded.signatures["classify"](images=tf.constant(big))["probabilities"],
        model(big),
        atol=1e-5,
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=">= 8 px"):
        loaded.signatures["classify"](images=tf.zeros([1, 5, 5, 3], tf.uint8))


def test_the_exported_classifier_takes_an_empty_batch_and_floats_by_the_contract(tmp_path):
    """Issue 33 MED 18: `classify` and the .keras classifier failed on a batch of 0 images
    (the encoder export returns 0 rows). LOW 32: `loaded.classify` cast float [0, 1]
    images to uint8 in silence (all 0, one class for every image)."""
    from amdim_tf.run import loader

    model = finetune.build_classifier(untrained_encoder(tiny_run_config()), 3)
    classifier = finetune.pixel_classifier(model, ("a", "b", "c"), "cifar")
    loaded = tf.saved_model.load(finetune.export_classifier(classifier, str(tmp_path / "1")))
    keras_file = str(tmp_path / "classifier.keras")
    loader.save_keras_atomic(classifier, keras_file)
    reloaded = keras.saving.load_model(keras_file)
    empty = np.zeros((0, 32, 32, 3), np.uint8)
    outputs = (
        loaded.signatures["classify"](images=tf.constant(empty)),
        loaded.signatures["serving_default"](images=tf.constant(empty)),
        loaded.classify(empty),
        reloaded.classify(empty),
    )
    for out in outputs:
        assert out["probabilities"].shape == (0, 3) and out["class_name"].shape == (0,)
    assert reloaded(empty).shape == (0, 3)

    pixels = np.random.default_rng(2).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    want = loaded.classify(pixels)["probabilities"].numpy()
    np.testing.assert_allclose(reloaded(pixels), want, atol=1e-5)
    for dtype in (np.float32, np.float64):  # 0..255 floats: the same prediction
        got = loaded.classify(pixels.astype(dtype))["probabilities"]
        np.testing.assert_allclose(got, want, atol=1e-5)
        with pytest.raises(tf.errors.InvalidArgumentError, match="multiply .0, 1. images by 255"):
            loaded.classify((pixels / 255.0).astype(dtype))
    for name in ("classify", "serving_default"):  # what TF Serving runs: uint8, unchanged
        spec = loaded.signatures[name].structured_input_signature[1]["images"]
        assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, None, 3]


def write_folder(root, classes=("cat", "dog", "emu"), per_class=10):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            image[..., c] = 255  # a class is told by its colour
            tf.io.write_file(os.path.join(root, name, f"{i}.png"), tf.io.encode_png(image))


def test_a_folder_without_split_dirs_is_scored_on_held_out_images(run_dir, tmp_path):
    """Issue 20 trap 4: finetune on a labelled folder without split directories scored
    all 80 images, its 20 training labels among them (100% printed). Trap 7: classify
    named folder classes "0", "1", "2"."""
    folder = str(tmp_path / "pets")
    write_folder(folder)
    data = {"data.source": "folder", "data.path": folder, "data.labels": "folders"}
    result = finetune.run_few_label_evaluation(
        run_dir, str(tmp_path / "out"), finetune.parse_budgets([], ["3"]), arms=("finetune",),
        recipe=TINY_RECIPE, data_overrides=data,
    )  # fmt: skip
    assert result["n_test"] == 6  # 20% of each class of 10, seed 0; was 30
    config = config_lib.with_data_overrides(tiny_run_config(), data)
    source = data_lib.open_source(config.data)
    train, test = (
        {bytes(f) for f, _ in source.examples(p).ds.as_numpy_iterator()} for p in ("train", "test")
    )
    assert len(train) == 24 and not train & test
    assert np.bincount(source.labels("test")).tolist() == [2, 2, 2]  # stratified
    reopened = data_lib.open_source(config.data)
    assert np.array_equal(reopened.labels("test"), source.labels("test"))  # seeded
    assert result["class_names"] == ["cat", "dog", "emu"]
    model = keras.saving.load_model(os.path.join(tmp_path, "out", "classifier.keras"))
    assert model.class_names == ("cat", "dog", "emu")
    loaded = tf.saved_model.load(os.path.join(tmp_path, "out", "export", "1"))
    names = loaded.signatures["classify"](images=tf.zeros([2, 32, 32, 3], tf.uint8))
    assert set(names["class_name"].numpy().astype(str)) <= {"cat", "dog", "emu"}


def test_missing_checkpoint_says_what_was_expected(tmp_path):
    prepare_workdir(tiny_run_config(), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints; train first"):
        finetune.run_few_label_evaluation(str(tmp_path), str(tmp_path / "o"), [])


def test_missing_workdir_says_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        finetune.run_few_label_evaluation(str(tmp_path / "nope"), str(tmp_path / "o"), [])


def test_only_data_may_be_overridden_and_at_the_encoders_size():
    config = tiny_run_config()
    moved = config_lib.with_data_overrides(config, {"data.source": "npz"})
    assert moved.data.source == "npz" and config.data.source == "digits"
    with pytest.raises(ValueError, match="only data"):
        config_lib.with_data_overrides(config, {"model.ndf": 4})
    with pytest.raises(ValueError, match="encoder's 32 px"):
        config_lib.with_data_overrides(config, {"data.image_size": 64})


def test_tool_reports_a_bad_budget_in_one_line(run_dir):
    proc = run_command("finetune", f"--workdir={run_dir}", "--fractions=0.001")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = one_error_line(proc)
    assert last.startswith("error: label budget 0.1% of 1,440 train images") and "class 0" in last


def test_the_table_marks_the_best_arm_of_each_budget_and_the_selection():
    rows = [
        {"arm": "frozen", "budget": "1%", "n_labels": 10, "seed": 1, "test_acc": 0.50},
        {"arm": "frozen", "budget": "1%", "n_labels": 10, "seed": 2, "test_acc": 0.60},
        {"arm": "finetune", "budget": "1%", "n_labels": 10, "seed": 1, "test_acc": 0.50,
         "selected": "linear probe"},
        {"arm": "finetune", "budget": "1%", "n_labels": 10, "seed": 2, "test_acc": 0.60,
         "selected": "bn train, backbone x1, step 40"},
        {"arm": "scratch", "budget": "1%", "n_labels": 10, "seed": 1, "test_acc": 0.20},
        {"arm": "scratch", "budget": "1%", "n_labels": 10, "seed": 2, "test_acc": 0.30},
    ]  # fmt: skip
    table = finetune.format_table(finetune._summary(rows), "T", rows)
    lines = table.splitlines()
    frozen, tuned, scratch = (next(x for x in lines if x.startswith(f"| {t}")) for t in (
        "frozen", "fine-tuned", "same network"))  # fmt: skip
    assert "**55.0%** (50.0-60.0, 2 seeds)" in frozen and "**55.0%**" in tuned
    assert "**" not in scratch and "25.0% (20.0-30.0, 2 seeds)" in scratch
    assert lines[-2:] == [
        "- 1%, seed 1: linear probe",
        "- 1%, seed 2: bn train, backbone x1, step 40",
    ]
