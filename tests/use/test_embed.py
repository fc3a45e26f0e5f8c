"""Embedding images with a trained encoder: the same features as the frozen evaluation,
from a work directory, an export or a .keras file; flat folders; outputs users open."""

import errno
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import one_error_line, run_command

from amdim_tf import config_lib, durable
from amdim_tf import data as data_lib
from amdim_tf.run import loader as backbone
from amdim_tf.run.run_config import load_run_config
from amdim_tf.use import embed, evaluate, export


def _read_index(out):
    with open(os.path.join(out, embed.INDEX_FILE)) as f:
        lines = f.read().splitlines()
    assert lines[0] == "id\tlabel\tclass"
    return [line.split("\t") for line in lines[1:]]


def test_features_are_the_frozen_evaluation_features_and_every_output_is_written(
    tiny_run, tmp_path
):
    config = load_run_config(tiny_run)
    out = str(tmp_path / "emb")
    summary = embed.embed(tiny_run, config.data, "test", out, features=("r1", "r5"), verbose=0)
    r1, r5 = np.load(os.path.join(out, "r1.npy")), np.load(os.path.join(out, "r5.npy"))
    assert r1.shape == (357, 32) and r5.shape == (357, 32)
    encoder = backbone.open_encoder(tiny_run).encoder
    ds = data_lib.make_eval_dataset(config.data, "test", 64)
    want, labels = evaluate.extract_features(encoder, ds)
    np.testing.assert_allclose(r1, want, atol=1e-4)
    pooled, _ = evaluate.extract_features(encoder, ds, keys=("r5",))
    np.testing.assert_allclose(r5, pooled, atol=1e-4)
    rows = _read_index(out)
    assert [r[0] for r in rows[:2]] == ["test:0", "test:1"]
    assert [int(r[1]) for r in rows] == labels.tolist()
    assert summary["images"] == 357 and summary["skipped_unreadable"] == 0

    with open(os.path.join(out, "projector_config.pbtxt")) as f:
        pbtxt = f.read()
    assert 'metadata_path: "metadata.tsv"' in pbtxt and 'image_path: "sprite.png"' in pbtxt
    assert 'tensor_name: "r1"' in pbtxt  # the feature's name, not a checkpoint path
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(out))
    np.testing.assert_array_equal(reader.get_tensor("r1"), r1)
    sprite = tf.io.decode_png(tf.io.read_file(os.path.join(out, "sprite.png")))
    assert sprite.shape == (19 * 32, 19 * 32, 3)  # ceil(sqrt(357)) = 19 tiles a side
    with open(os.path.join(out, "metadata.tsv")) as f:
        metadata = [line.split("\t") for line in f.read().splitlines()]
    assert len(metadata) == 358 and metadata[0] == ["class", "label", "id"]
    # Labelled and coloured by class name: the first column, a name of the data's classes.
    assert [m[0] for m in metadata[1:]] == [r[2] or r[1] for r in rows]
    png = tf.io.decode_png(tf.io.read_file(os.path.join(out, embed.NEIGHBOURS_FILE)))
    assert png.shape[0] > 400 and png.shape[1] > 400
    assert not os.path.exists(os.path.join(out, ".thumbnails.npy"))


def test_export_and_keras_file_give_the_workdir_features(tiny_run, tmp_path):
    config = load_run_config(tiny_run)
    base = str(tmp_path / "export")
    export.export_encoder(
        backbone.load_encoder(tiny_run, include_preprocessing=False), os.path.join(base, "1")
    )
    keras_file = backbone.save_encoder(tiny_run, str(tmp_path / "encoder.keras"))
    features, fingerprints = {}, {}
    for name, path in (("workdir", tiny_run), ("export", base), ("keras", keras_file)):
        out = str(tmp_path / f"emb_{name}")
        summary = embed.embed(
            path, config.data, "test", out, verbose=0, projector_examples=0, queries=0
        )
        features[name] = np.load(os.path.join(out, "r1.npy"))
        fingerprints[name] = summary["encoder_fingerprint"]
        assert not os.path.exists(os.path.join(out, embed.NEIGHBOURS_FILE))
    np.testing.assert_allclose(features["export"], features["workdir"], atol=1e-4)
    np.testing.assert_allclose(features["keras"], features["workdir"], atol=1e-4)
    # embed.json records one identity for one encoder, whichever form it was read from.
    assert set(fingerprints.values()) == {backbone.open_encoder(tiny_run).fingerprint}


def test_a_flat_folder_is_unlabelled_and_unreadable_files_are_skipped_and_named(tiny_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):  # odd sizes: the eval view resizes them to 32 px
        image = rng.integers(0, 256, (40 + i, 36, 3), dtype=np.uint8)
        tf.io.write_file(str(folder / f"img{i}.png"), tf.io.encode_png(image))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    data = config_lib.base_config().data
    data.source, data.path = "folder", str(folder)
    out = str(tmp_path / "emb")
    summary = embed.embed(
        tiny_run, data, "test", out, verbose=0, projector_examples=3, neighbours=2
    )
    assert summary["split"] == "unlabeled" and summary["images"] == 5
    assert summary["skipped_unreadable"] == 1
    assert summary["skipped_first"] == [str(folder / "broken.jpg")]
    rows = _read_index(out)
    assert [r[0] for r in rows] == [str(folder / f"img{i}.png") for i in range(5)]
    assert all(r[1] == "" for r in rows)
    assert np.load(os.path.join(out, "r1.npy")).shape == (5, 32)
    with open(os.path.join(out, "metadata.tsv")) as f:
        metadata = [line.split("\t") for line in f.read().splitlines()]
    assert len(metadata) == 4 and metadata[0] == ["name", "id"]  # header + 3 sampled rows
    assert all(m[0].startswith("img") and m[1].endswith(m[0] + ".png") for m in metadata[1:])


def test_non_finite_rows_are_counted_named_and_kept_out_of_the_pictures(
    tiny_run, tmp_path, monkeypatch
):
    """Issue 33: NaN or inf features of a broken encoder went into embed's outputs
    unmarked (search and inspect skip them, but nothing said which or how many)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        tf.io.write_file(str(folder / f"img{i}.png"), tf.io.encode_png(image))
    for name, value in (("white.png", 255), ("black.png", 0)):
        image = np.full((32, 32, 3), value, np.uint8)
        tf.io.write_file(str(folder / name), tf.io.encode_png(image))
    real = backbone.Loaded.pooled_unit_views

    def broken(self, views, keys=("r1",)):  # NaN for white images, inf for black ones
        out = real(self, views, keys)
        top = tf.reduce_max(views, axis=[1, 2, 3])[:, None]  # [B, 1]
        low = tf.reduce_min(views, axis=[1, 2, 3])[:, None]
        bad = tf.where(tf.equal(low, 1.0), np.nan, tf.where(tf.equal(top, 0.0), np.inf, 0.0))
        return {k: v + bad for k, v in out.items()}

    monkeypatch.setattr(backbone.Loaded, "pooled_unit_views", broken)
    drawn = []
    real_figure = embed._neighbour_figure
    monkeypatch.setattr(embed, "_neighbour_figure", lambda *a: drawn.append(a) or real_figure(*a))
    data = config_lib.base_config().data
    data.source, data.path = "folder", str(folder)
    out = str(tmp_path / "emb")
    summary = embed.embed(tiny_run, data, "test", out, verbose=0, neighbours=3, queries=8)
    bad = sorted([str(folder / "black.png"), str(folder / "white.png")])
    assert summary["non_finite_rows"] == 2 and sorted(summary["non_finite_ids"]) == bad
    rows = [r[0] for r in _read_index(out)]
    r1 = np.load(os.path.join(out, "r1.npy"))
    assert sorted(rows[i] for i in np.flatnonzero(~np.isfinite(r1).all(1))) == bad  # aligned
    query_rows = drawn[0][3]
    assert len(query_rows) == 6 and not {rows[i] for i in query_rows} & set(bad)
    with open(os.path.join(out, "metadata.tsv")) as f:
        shown = [line.split("\t")[-1] for line in f.read().splitlines()[1:]]
    assert len(shown) == 6 and not set(shown) & set(bad)
    assert np.isfinite(tf.train.load_checkpoint(out).get_tensor("r1")).all()

    monkeypatch.setattr(  # every row broken: refused, nothing written
        backbone.Loaded, "pooled_unit_views", lambda self, v, keys=("r1",): {
            k: x * np.nan for k, x in real(self, v, keys).items()
        },
    )  # fmt: skip
    with pytest.raises(ValueError, match="every one of the 8 images has NaN or inf") as e:
        embed.embed(tiny_run, data, "test", str(tmp_path / "none"), verbose=0)
    assert "\n" not in str(e.value) and not (tmp_path / "none").exists()


def test_nearest_matches_brute_force_across_chunks():
    x = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)
    queries = np.array([3, 17, 42])
    rows, sims = embed.nearest(x, queries, k=4, chunk=7)
    n = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = n[queries] @ n.T
    full[np.arange(3), queries] = -np.inf
    np.testing.assert_array_equal(rows, np.argsort(-full, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(sims, np.take_along_axis(full, rows, 1), rtol=1e-5)


def test_unknown_features_are_refused(tiny_run, tmp_path):
    data = load_run_config(tiny_run).data
    with pytest.raises(ValueError, match="available"):
        embed.embed(tiny_run, data, "test", str(tmp_path / "e"), features=("z",), verbose=0)
    assert not os.path.exists(tmp_path / "e")  # refused before any output


def test_the_tool_embeds_cifar_npz_with_class_names(tiny_run, cifar_npz, tmp_path):
    out = str(tmp_path / "emb")
    args = [
        f"--encoder={tiny_run}",
        f"--out={out}",
        "--split=test",
        "--config.data.source=npz",
        f"--config.data.path={os.path.abspath(cifar_npz)}",
        "--projector_examples=100",
    ]
    done = run_command("embed", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "embedded 1,000 images" in done.stdout
    rows = _read_index(out)
    assert len(rows) == 1000 and rows[0][2] in ("airplane", "automobile", "bird", "cat", "deer",
                                                 "dog", "frog", "horse", "ship", "truck")  # fmt: skip
    bad = run_command("embed", f"--encoder={tmp_path / 'nowhere'}", f"--out={out}")
    assert bad.returncode == 2
    assert "work directory" in one_error_line(bad)


def test_neighbour_queries_are_named_by_class_or_file_stem(tiny_run, tmp_path, monkeypatch):
    titles = []
    real = embed._neighbour_figure
    monkeypatch.setattr(embed, "_neighbour_figure", lambda *a: titles.append(a[-1]) or real(*a))
    data = load_run_config(tiny_run).data
    embed.embed(tiny_run, data, "test", str(tmp_path / "a"), verbose=0, projector_examples=0)
    names = {r[2] or r[1] for r in _read_index(str(tmp_path / "a"))}
    assert len(titles[0]) == 8 and set(titles[0]) <= names  # class names, not "query (3)"
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        image = np.full((32, 32, 3), 40 * i, np.uint8)
        tf.io.write_file(str(folder / f"cat_{i}.png"), tf.io.encode_png(image))
    data.source, data.path = "folder", str(folder)
    embed.embed(tiny_run, data, "test", str(tmp_path / "b"), verbose=0, projector_examples=0)
    assert titles[1] == ["cat_0", "cat_1", "cat_2"]


def _listing(out):
    return {f: os.path.getmtime(os.path.join(out, f)) for f in sorted(os.listdir(out))}


def test_a_new_embedding_replaces_the_previous_one_whole(tiny_run, tmp_path, monkeypatch):
    """Issue 21 items 2, 6 and 13: no file of the previous run beside the new ones; a
    failure at any point (a kill, a full disk) leaves the previous output as it was."""
    data = load_run_config(tiny_run).data
    out = str(tmp_path / "emb")
    embed.embed(tiny_run, data, "test", out, features=("r1", "r5"), verbose=0)
    assert "r5.npy" in os.listdir(out)
    before = _listing(out)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill in the middle of the outputs

    with monkeypatch.context() as m:
        m.setattr(embed, "nearest", killed)
        with pytest.raises(KeyboardInterrupt):
            embed.embed(tiny_run, data, "test", out, verbose=0)
    assert _listing(out) == before

    def disk_full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "posix_fallocate", disk_full)
        with pytest.raises(ValueError) as e:
            embed.embed(tiny_run, data, "test", out, verbose=0)
    assert "the disk is full" in str(e.value) and "previous output is unchanged" in str(e.value)
    assert "\n" not in str(e.value) and _listing(out) == before
    assert sorted(os.listdir(tmp_path)) == ["emb"]  # no staging directory left behind

    small = config_lib.base_config().data
    small.source, small.path = "folder", str(tmp_path / "photos")
    os.makedirs(small.path)
    for i in range(3):
        image = np.full((32, 32, 3), 40 * i, np.uint8)
        tf.io.write_file(os.path.join(small.path, f"{i}.png"), tf.io.encode_png(image))
    embed.embed(tiny_run, small, "test", out, verbose=0, projector_examples=0)
    assert "r5.npy" not in os.listdir(out) and "sprite.png" not in os.listdir(out)
    assert np.load(os.path.join(out, "r1.npy")).shape == (3, 32)


def test_an_output_parked_by_a_kill_between_the_renames_is_put_back(tiny_run, tmp_path):
    out = tmp_path / "emb"
    parked = tmp_path / f".emb.previous-{2**31 - 2}"  # above any pid_max: a dead writer
    parked.mkdir()
    (parked / embed.SUMMARY_FILE).write_text("{}")
    durable.OutputDir(str(out), embed.SUMMARY_FILE, "an embedding")
    assert (out / embed.SUMMARY_FILE).exists() and not parked.exists()


def test_a_directory_that_is_not_an_embedding_is_not_replaced(tiny_run, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files that are not an embedding"):
        embed.embed(tiny_run, load_run_config(tiny_run).data, "test", str(tmp_path), verbose=0)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_class_name_with_mathtext_draws_as_plain_text(tmp_path):
    """Issue 33 MED 8: a class or file name like `a$\\frac$b` failed the neighbour image."""
    thumbs = np.zeros((3, 8, 8, 3), np.uint8)
    rows, sims = np.array([[1, 2]]), np.array([[0.9, 0.5]], np.float32)
    out = str(tmp_path / "n.png")
    embed._neighbour_figure(out, thumbs, np.array([0, 0, 1]), [0], rows, sims, "r1",
                            ["a$\\frac$b"])  # fmt: skip
    assert os.path.getsize(out) > 0
