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
from amdim_tf.use import classifier, evaluate, few_label_arms, finetune

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


def collapsed_run(workdir):
    """A work directory whose encoder maps every image to the same r1 (its trainable
    weights are zero): a pretrained encoder that cannot help any classifier."""
    config = tiny_run_config()
    prepare_workdir(config, workdir)
    encoder = untrained_encoder(config)
    for v in encoder.trainable_variables:
        v.assign(tf.zeros_like(v))
    holder = tf.Module()
    holder.encoder = encoder
    ckpt = tf.train.Checkpoint(model=holder)
    tf.train.CheckpointManager(ckpt, os.path.join(workdir, "checkpoints"), 1).save(1)
    return workdir


# -- the arms and the classifier handed out -------------------------------------------


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

    monkeypatch.setattr(few_label_arms, "train_classifier", fake_training)
    config = load_run_config(run_dir)
    x = np.random.default_rng(0).normal(size=(100, 32, 32, 3)).astype(np.float32)  # views
    y = np.tile(np.arange(10), 10)
    train, held = np.arange(80), np.arange(80, 100)
    encoder = untrained_encoder(config)
    features = few_label_arms.frozen_features(encoder, x, y)[0]
    probe_clf = evaluate.fit_linear(features, y, seed=1)
    recipe = finetune.Recipe(candidates=(("train", 1.0),))
    names = tuple(str(i) for i in range(10))
    ev = few_label_arms.Evaluation(
        config, config, recipe, names, encoder, encoder.get_weights(), None, None, None
    )
    subset = few_label_arms.Subset(x, y, 1, train, held, features, probe_clf)
    _, info = few_label_arms._fine_tune(ev, subset)
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


def test_scratch_is_the_classifier_written_when_it_wins_on_the_held_out_labels(tmp_path):
    """Issue 32 (few labels): the fine-tuned arm was written even when scratch was better.
    A collapsed encoder (constant r1) against scratch on the digits at 10 per class:
    the pretrained arms stay at chance on the 20 held-out labels (observed 10%; test
    9.8%), scratch learns (observed 75%; test 67.8%), so scratch is written, named, and said to win."""
    run = collapsed_run(str(tmp_path / "run"))
    recipe = finetune.Recipe(
        epochs=1, min_steps=100, max_steps=100, batch_size=16, head_lr=1e-2, evals=4,
        candidates=(("frozen", 0.0),),
    )  # fmt: skip
    out = str(tmp_path / "out")
    result = finetune.run_few_label_evaluation(
        run, out, finetune.parse_budgets([], ["10"]), recipe=recipe
    )
    choice = result["saved_classifier"]
    held = choice["held_out"]
    assert choice["arm"] == "scratch" and choice["n_held_out"] == 20
    assert held["scratch"] > max(held["frozen"], held["finetune"]) + choice["noise"]
    assert choice["margin"] == pytest.approx(
        held["scratch"] - max(held["frozen"], held["finetune"])
    )
    text = result["table"].splitlines()[-1]
    assert text.startswith("Classifier written (classifier.keras, export/1): same network")
    assert "Pretraining did not help here" in text
    scratch = next(r for r in result["rows"] if r["arm"] == "scratch")
    written = keras.saving.load_model(os.path.join(out, "classifier.keras"))
    x_test, y_test = finetune._eval_split(tiny_run_config().data, 0)
    assert classifier.accuracy(written.classifier, x_test, y_test) == scratch["test_acc"]


def test_the_classifier_chosen_is_the_best_held_out_arm_ties_to_the_pretrained_ones():
    choose = few_label_arms.choose_classifier
    held = {"frozen": 0.7, "finetune": 0.7, "scratch": 0.6}
    tie = choose(held, 20, probe_is_tuned=True)  # the fine-tuned arm is the probe
    assert tie["arm"] == "finetune" and tie["runner_up"] == "scratch"
    assert tie["margin"] == pytest.approx(0.1) and tie["noise"] == pytest.approx(0.1024695)
    assert choose({**held, "scratch": 0.75}, 20)["arm"] == "scratch"
    nothing = choose(dict.fromkeys(held), 0)
    assert nothing["arm"] == "finetune" and nothing["margin"] is None
    assert choose({"scratch": None}, 0)["arm"] == "scratch"
