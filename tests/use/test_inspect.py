"""Data inspection: planted near-duplicates are found per kind, the threshold rule and the
label vote equal hand-written NumPy, unlabelled data skips the label check and says so."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from synthetic_index import write_index

from amdim_tf import config_lib
from amdim_tf.run.run_config import load_run_config
from amdim_tf.use import embed, inspect

KINDS = ("exact", "jpeg", "resized", "crop", "colour")


def _smooth_image(rng):
    """A 32 px image of smooth colour blobs: distinct images, unlike noise, have structure."""
    small = rng.uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    big = tf.image.resize(small, [32, 32], method="bicubic")[0].numpy()
    big += rng.normal(0, 6, big.shape)
    return np.clip(big, 0, 255).astype(np.uint8)


def _variant(image, kind):
    if kind == "jpeg":
        return tf.io.decode_jpeg(tf.io.encode_jpeg(image, quality=75)).numpy()
    if kind == "resized":
        return tf.cast(tf.image.resize(image, [40, 40], antialias=True), tf.uint8).numpy()
    if kind == "crop":
        return image[1:31, 1:31]
    if kind == "colour":
        return np.clip(image * np.array([1.06, 1.0, 0.94]), 0, 255).astype(np.uint8)
    return image


def test_planted_duplicates_are_found_per_kind(tiny_run, tmp_path):
    """300 distinct images, and for 5 of them one copy of each kind, in a flat folder.

    Observed with the 2-step tiny encoder of `tiny_run` (seeded) and the default threshold
    (cosine 0.99887): recall exact 1.0, jpeg 0.8, resized 1.0, crop 0.6, colour 0.0; no
    false pair (precision 1.0). The barely trained encoder puts distinct smooth images
    only ~0.01 apart (median), so a 6% colour shift is as far as another image; a trained
    encoder learns colour invariance from its augmentations. The asserts ask for what
    holds with a margin: all exact and resized copies, 3/5 of the JPEGs, half of all
    planted pairs, precision 0.9.
    """
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    bases = [_smooth_image(rng) for _ in range(300)]
    for i, image in enumerate(bases):
        tf.io.write_file(str(folder / f"base{i:03d}.png"), tf.io.encode_png(image))
    planted = {}  # variant file -> (kind, base file)
    for n, kind in enumerate(KINDS):
        for i in range(5 * n, 5 * n + 5):
            name = str(folder / f"{kind}{i:02d}.png")
            tf.io.write_file(name, tf.io.encode_png(_variant(bases[i], kind)))
            planted[name] = (kind, str(folder / f"base{i:03d}.png"))
    data = config_lib.base_config().data
    data.source, data.path = "folder", str(folder)
    emb = str(tmp_path / "emb")
    embed.embed(tiny_run, data, "test", emb, verbose=0, projector_examples=0, queries=0)
    out = str(tmp_path / "report")
    summary = inspect.inspect_embeddings([emb], out, k=5, top=8, verbose=False)

    with open(os.path.join(out, "pairs.csv")) as f:
        found = {frozenset((r["id_a"], r["id_b"])) for r in csv.DictReader(f)}
    truth = {frozenset((v, base)) for v, (_, base) in planted.items()}
    recall = {
        kind: np.mean([frozenset((v, b)) in found for v, (k, b) in planted.items() if k == kind])
        for kind in KINDS
    }
    precision = len(found & truth) / max(len(found), 1)
    print(f"recall per kind {recall}, precision {precision:.2f}, {summary['threshold']}")
    assert recall["exact"] == recall["resized"] == 1.0 and recall["jpeg"] >= 0.6
    assert np.mean(list(recall.values())) >= 0.5 and precision >= 0.9
    assert summary["counts"]["exact_duplicate_pairs"] >= 5
    assert summary["notes"] == ["unlabeled: unlabelled, mislabel check skipped"]
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    assert "mislabel check skipped" in report and "Near-duplicate threshold" in report
    assert os.path.exists(os.path.join(out, "duplicates.png"))
    assert os.path.exists(os.path.join(out, "outliers.png"))


def test_threshold_rule_and_label_vote_equal_numpy():
    rng = np.random.default_rng(1)
    distances = np.exp(rng.normal(np.log(0.1), 0.5, 1000))
    distances[:3] = 0.0  # exact duplicates: outside the bulk statistics
    rule = inspect.duplicate_threshold(1.0 - distances)
    bulk = np.log(distances[3:])
    median = np.median(bulk)
    mad = 1.4826 * np.median(np.abs(bulk - median))
    assert rule["cosine"] == pytest.approx(1.0 - np.exp(median - 3.0 * mad), abs=1e-6)
    assert rule["median_distance"] == pytest.approx(0.1, rel=0.1)

    neighbour_labels = np.array([[1, 1, 1, 1, 0], [0, 0, 1, 1, -1], [2, 2, 2, 2, 2]])
    labels = np.array([0, 0, 2])
    flagged, predicted, share = inspect.knn_disagreement(neighbour_labels, labels, 3, 0.8)
    assert flagged.tolist() == [0] and predicted.tolist() == [1, 0, 2]
    np.testing.assert_allclose(share, [0.8, 0.4, 1.0])


def test_train_against_test_reports_leakage_and_mislabels(tiny_run, tmp_path):
    config = load_run_config(tiny_run)
    dirs = []
    for split in ("train", "test"):
        out = str(tmp_path / split)
        embed.embed(tiny_run, config.data, split, out, verbose=0, projector_examples=0, queries=0)
        dirs.append(out)
    # Plant leakage: test row 0 is a copy of train row 0 (same features, as a re-upload).
    train = np.load(os.path.join(dirs[0], "r1.npy"))
    test = np.load(os.path.join(dirs[1], "r1.npy"))
    test[0] = train[0]
    np.save(os.path.join(dirs[1], "r1.npy"), test)
    out = str(tmp_path / "report")
    summary = inspect.inspect_embeddings(dirs, out, threshold=0.99999, top=0, verbose=False)
    counts = summary["counts"]
    assert counts["images"] == {"train": len(train), "test": len(test)}
    assert counts["leaked_images"] >= 1 and summary["notes"] == []
    with open(os.path.join(out, "pairs.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {"across", "test:0", "train:0"} <= {v for r in rows for v in r.values()}
    with open(os.path.join(out, "mislabels.csv")) as f:
        assert len(list(csv.DictReader(f))) == sum(counts["likely_mislabels"].values())
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["threshold"]["chosen"] == "given"
    with pytest.raises(ValueError, match="threshold=2"):
        inspect.inspect_embeddings(dirs, out, threshold=2)


def test_one_run_named_two_ways_is_one_encoder_and_another_is_refused(
    tiny_run, tmp_path, monkeypatch
):
    """Before: `./run` and its absolute path were "different encoders" (the recorded
    descriptions, which quote the path as given, were compared as strings)."""
    config = load_run_config(tiny_run)
    monkeypatch.chdir(os.path.dirname(tiny_run))
    dirs = []
    for name, path in (("relative", "./" + os.path.basename(tiny_run)), ("absolute", tiny_run)):
        out = str(tmp_path / name)
        embed.embed(path, config.data, "test", out, verbose=0, projector_examples=0, queries=0)
        dirs.append(out)
    summary = inspect.inspect_embeddings(dirs, str(tmp_path / "report"), top=0, verbose=False)
    assert summary["counts"]["images"] == {"test(a)": 357, "test(b)": 357}

    path = os.path.join(dirs[1], embed.SUMMARY_FILE)
    with open(path) as f:
        recorded = json.load(f)
    recorded["encoder_fingerprint"] = "sha256:" + "0" * 64
    with open(path, "w") as f:
        json.dump(recorded, f)
    with pytest.raises(ValueError, match="different encoders"):
        inspect.inspect_embeddings(dirs, str(tmp_path / "report2"), top=0, verbose=False)


def _clustered(n_per_class, rng, dim=8):
    """Two labelled classes around two directions, with one exact duplicate in each."""
    centres = np.eye(dim, dtype=np.float32)[:2] * 3.0
    labels = np.repeat([0, 1], n_per_class)
    x = centres[labels] + rng.normal(0, 1.0, (len(labels), dim)).astype(np.float32)
    x[1] = x[0]
    x[n_per_class + 1] = x[n_per_class]
    return x, labels


def test_non_finite_rows_change_no_finding(tmp_path):
    """Issue 33 HIGH 5: 2 NaN/inf rows of 18 moved the threshold (1.0 -> 0.52), the pairs
    (8 -> 13) and the mislabels (0 -> 6). They are skipped, counted, and change nothing."""
    x, labels = _clustered(8, np.random.default_rng(4))
    clean = write_index(tmp_path / "clean", x, labels, ("a", "b"))
    broken_x = np.insert(x, [3, 11], np.nan, axis=0)
    broken_x[12, 0] = np.inf  # rows 3 (NaN) and 12 (one inf) are the inserted ones
    broken_x[12, 1:] = 1.0
    broken = write_index(tmp_path / "broken", broken_x, np.insert(labels, [3, 11], 0), ("a", "b"))
    want = inspect.inspect_embeddings(clean, str(tmp_path / "r0"), k=3, top=0, verbose=False)
    got = inspect.inspect_embeddings(broken, str(tmp_path / "r1"), k=3, top=0, verbose=False)
    assert got["threshold"]["cosine"] == pytest.approx(want["threshold"]["cosine"], abs=1e-6)
    assert got["counts"]["nonfinite_rows_skipped"] == {"test": 2}
    for key in ("near_duplicate_pairs_within", "exact_duplicate_pairs", "likely_mislabels"):
        assert got["counts"][key] == want["counts"][key], key
    with open(tmp_path / "r1" / "pairs.csv") as f:
        ids = {row["id_a"] for row in csv.DictReader(f)}
    assert ids and not ids & {"test:3", "test:12"}  # the broken rows, named by their own id
    with open(tmp_path / "r1" / "report.md") as f:
        assert "2 rows of NaN or inf features skipped" in f.read()


def test_every_pair_of_a_duplicate_group_larger_than_k_is_counted(tmp_path):
    """Issue 33 MED 16: 15 identical images with k=10 gave 39 of their 105 pairs."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    x[:15] = x[0]
    out = tmp_path / "report"
    summary = inspect.inspect_embeddings(
        write_index(tmp_path / "emb", x), str(out), k=10, top=0, verbose=False
    )
    assert summary["counts"]["near_duplicate_pairs_within"]["test"] == 105
    assert summary["counts"]["exact_duplicate_pairs"] == 105
