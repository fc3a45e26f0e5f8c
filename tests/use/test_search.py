"""Search over an embed output: exact top-k equals brute force, images find themselves,
a truncated index and a foreign encoder are refused by name; an index is data (every file
checked on load, never a model it names run), the encoder is checked by fingerprint, query
images pass the decode gate and the minimum size."""

import json
import logging
import os
import pathlib
import shutil
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from synthetic_index import write_index

from amdim_tf.errors import UserError
from amdim_tf.run import loader as backbone
from amdim_tf.run.run_config import load_run_config
from amdim_tf.use import embed, export, search


@pytest.fixture(scope="module")
def index_dir(tiny_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("search") / "emb")
    config = load_run_config(tiny_run)
    embed.embed(tiny_run, config.data, "test", out, verbose=0, projector_examples=0, queries=0)
    return out


def test_features_and_images_find_themselves(index_dir, tiny_run, tmp_path):
    index = search.Index.load(index_dir)
    raw = np.load(os.path.join(index_dir, "r1.npy"))
    assert index.features.shape == raw.shape and index.labelled
    rows, sims = index.search(raw[[4, 9]], k=3)
    assert rows[:, 0].tolist() == [4, 9] and np.allclose(sims[:, 0], 1.0, atol=1e-5)
    assert index.ids[4] == "test:4"

    # The raw pixels of test:4 and test:9 as PNG files: the query path reads, views and
    # encodes them as embed did, so each finds itself at cosine ~1.
    source = index._source()
    examples = source.examples("test")
    folder = tmp_path / "queries"
    folder.mkdir()
    for j, (payload, _) in examples.ds.enumerate().as_numpy_iterator():
        if j in (4, 9):
            png = tf.io.encode_png(examples.decode(payload))
            tf.io.write_file(str(folder / f"q{j}.png"), png)
        if j > 9:
            break
    out = str(tmp_path / "grid.png")
    results = search.search_files(
        index_dir, str(folder), k=4, out_png=out, encoder=tiny_run, thumb=16
    )
    assert [r["neighbours"][0]["id"] for r in results] == ["test:4", "test:9"]
    assert all(r["neighbours"][0]["cosine"] > 0.999 for r in results)
    assert results[0]["neighbours"][0]["label"] == int(index.labels[4])
    assert tf.io.decode_png(tf.io.read_file(out)).shape[0] > 100
    thumbs = index.thumbnails([4, 9], 16)
    assert thumbs.shape == (2, 16, 16, 3) and thumbs.max() > 0


def test_truncated_index_and_foreign_sizes_are_refused(index_dir, tmp_path, tiny_run):
    broken = str(tmp_path / "broken")
    shutil.copytree(index_dir, broken)
    with open(os.path.join(broken, "index.tsv")) as f:
        lines = f.read().splitlines()
    with open(os.path.join(broken, "index.tsv"), "w") as f:
        f.write("\n".join(lines[:-5]) + "\n")
    with pytest.raises(ValueError, match=r"holds 357 rows but .* lists 352 images"):
        search.Index.load(broken)

    index = search.Index.load(index_dir)
    with pytest.raises(ValueError, match="query features have size 33 but .* size 32"):
        index.search(np.zeros((1, 33), np.float32))
    config = load_run_config(tiny_run)
    config.model.n_rkhs = 16
    other = backbone.save_encoder(backbone.untrained_encoder(config), str(tmp_path / "other.keras"))
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="gives r1 of size 16 but the index .* size 32"):
        index.search([image], encoder=other)


def test_an_undecodable_query_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(ValueError, match="cannot decode query image .*broken.jpg"):
        search.read_query_images(str(bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        search.read_query_images(str(empty))


def _indexed_images(index, positions):
    """uint8 [H, W, 3] pixels of the indexed test images at `positions`, as decoded."""
    examples = index._source().examples("test")
    found = {}
    for j, (payload, _) in examples.ds.enumerate().as_numpy_iterator():
        if j in positions:
            found[int(j)] = examples.decode(payload).numpy()
        if len(found) == len(positions):
            break
    return [found[j] for j in positions]


def test_one_encoder_is_accepted_in_every_form_and_another_refused(index_dir, tiny_run, tmp_path):
    """The fingerprint agrees for the work directory, its .keras file and its SavedModel
    export; an untrained encoder of the same feature width (before: accepted, top-1 of an
    indexed image not itself) is refused unless allow_other_encoder."""
    index = search.Index.load(index_dir)
    recorded = index.summary["encoder_fingerprint"]
    workdir = backbone.open_encoder(tiny_run)
    assert recorded == workdir.fingerprint and recorded.startswith("sha256:")
    keras_file = backbone.save_encoder(tiny_run, str(tmp_path / "same.keras"))
    export_dir = export.export_encoder(workdir.encoder, str(tmp_path / "export" / "1"))
    images = _indexed_images(index, [4, 9])
    for path in (tiny_run, keras_file, export_dir):
        assert backbone.open_encoder(path).fingerprint == recorded, path
        rows, sims = index.search(images, k=2, encoder=path)
        assert rows[:, 0].tolist() == [4, 9] and np.all(sims[:, 0] > 0.999), path
    # The same weights under another preset are another encoder (another view of images).
    assert backbone.weights_fingerprint(workdir.encoder.weights, "stl") != recorded

    config = load_run_config(tiny_run)
    assert config.model.n_rkhs == index.dim
    other = backbone.save_encoder(
        backbone.untrained_encoder(config, seed=7), str(tmp_path / "other.keras")
    )
    with pytest.raises(UserError, match=r"other.keras .* is not the one .*allow_other_encoder"):
        index.search(images, k=2, encoder=other)
    rows, _ = index.search(images, k=2, encoder=other, allow_other_encoder=True)
    assert rows.shape == (2, 2)


def test_an_index_without_a_fingerprint_warns_and_checks_the_size(
    index_dir, tiny_run, tmp_path, caplog
):
    old = str(tmp_path / "old")
    shutil.copytree(index_dir, old)
    path = os.path.join(old, embed.SUMMARY_FILE)
    with open(path) as f:
        summary = json.load(f)
    del summary["encoder_fingerprint"]
    with open(path, "w") as f:
        json.dump(summary, f)
    index = search.Index.load(old)
    with caplog.at_level(logging.WARNING):
        rows, _ = index.search(_indexed_images(index, [4]), k=1, encoder=tiny_run)
    assert rows[0, 0] == 4
    assert "records no encoder fingerprint" in caplog.text


def _png_header(path, width, height):
    """A PNG file that declares width x height and holds no pixel data."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", b"")
            + chunk(b"IEND", b"")
        )
    return path


def _crafted_export(directory, marker):
    """A SavedModel that passes for an export of this project and writes `marker` (a file
    outside the index) whenever either endpoint runs."""

    class Crafted(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def serve_float(self, images):
            tf.io.write_file(marker, "run by an index")
            return {"r1": tf.zeros([tf.shape(images)[0], 1, 1, 32])}

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        def serving_default(self, images):
            tf.io.write_file(marker, "run by an index")
            return {"r1": tf.zeros([tf.shape(images)[0], 1, 1, 32])}

    tf.saved_model.save(Crafted(), directory)
    os.makedirs(os.path.join(directory, "variables"), exist_ok=True)
    info = {"outputs": ["r1", "global"], "image_size": 32, "preset": "cifar", "class": "X"}
    with open(os.path.join(directory, backbone.EXPORT_CONFIG_FILE), "w") as f:
        json.dump(info, f)


def test_a_crafted_index_never_runs_the_model_it_names(index_dir, tmp_path):
    """Before: embed.json's encoder_path, pointing at a SavedModel inside the index, was
    opened and run for a query image, and its ops wrote a file outside the index."""
    evil = str(tmp_path / "evil")
    shutil.copytree(index_dir, evil)
    marker = str(tmp_path / "written_by_the_index")
    model_dir = os.path.join(evil, "model")
    _crafted_export(model_dir, marker)
    path = os.path.join(evil, embed.SUMMARY_FILE)
    with open(path) as f:
        summary = json.load(f)
    summary["encoder_path"] = model_dir
    with open(path, "w") as f:
        json.dump(summary, f)
    query = str(tmp_path / "x.png")
    tf.io.write_file(query, tf.io.encode_png(np.full((32, 32, 3), 90, np.uint8)))
    with pytest.raises(UserError, match=f"--encoder.*--encoder={model_dir}"):
        search.search_files(evil, query, k=3, out_png=str(tmp_path / "grid.png"))
    with pytest.raises(UserError, match="never chooses it: pass --encoder"):
        search.Index.load(evil).search([np.zeros((32, 32, 3), np.uint8)], k=3)
    assert not os.path.exists(marker)
    # Named by the user, it runs (so the model is live: the marker proves it), and is
    # still refused as not the index's encoder.
    with pytest.raises(UserError, match="is not the one"):
        search.Index.load(evil).search([np.zeros((32, 32, 3), np.uint8)], k=3, encoder=model_dir)
    assert os.path.exists(marker)


def _damage(directory, case):
    """Damages one file of the index copy at `directory` as `case` says; returns its path."""
    npy = pathlib.Path(directory, "r1.npy")
    tsv = pathlib.Path(directory, embed.INDEX_FILE)
    summary = pathlib.Path(directory, embed.SUMMARY_FILE)
    raw = np.load(npy)
    lines = tsv.read_text().splitlines()
    if case == "npz":
        with open(npy, "wb") as f:
            np.savez(f, r1=raw)
    elif case == "truncated":
        npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    elif case == "garbled":
        npy.write_bytes(b"\x93NUMPY garbage" * 40)
    elif case == "one_dimensional":
        np.save(npy, raw[:, 0])
    elif case == "invalid_json":
        summary.write_text('{"encoder": ')
    elif case == "json_list":
        summary.write_text("[1, 2]")
    elif case == "features_list":
        summary.write_text('{"features": [357, 32]}')
    elif case in ("bad_label", "huge_label"):
        lines[3] = lines[3].split("\t")[0] + (
            "\tseven\tx" if case == "bad_label" else "\t10000000000\tx"
        )
        tsv.write_text("\n".join(lines) + "\n")
    elif case == "empty":
        tsv.write_text(lines[0] + "\n")
        np.save(npy, raw[:0])
        recorded = json.loads(summary.read_text())
        recorded["features"]["r1"] = [0, raw.shape[1]]
        summary.write_text(json.dumps(recorded))
    if case in ("npz", "truncated", "garbled", "one_dimensional"):
        return str(npy)
    return str(tsv if case in ("bad_label", "huge_label", "empty") else summary)


@pytest.mark.parametrize(
    "case",
    ["npz", "truncated", "garbled", "one_dimensional", "invalid_json", "json_list",
     "features_list", "bad_label", "huge_label", "empty"],
)  # fmt: skip
def test_every_index_file_is_checked_on_load_in_one_line_naming_it(index_dir, tmp_path, case):
    """Before: AttributeError (npz, JSON list), numpy's or json's message without the file
    (truncated, garbled, invalid JSON), "holds 18 rows but ... lists 18 images" (1-D),
    "invalid literal for int()" (label), "use 1 <= k <= 0" at search (empty)."""
    broken = str(tmp_path / case)
    shutil.copytree(index_dir, broken)
    named = _damage(broken, case)
    with pytest.raises(UserError) as caught:
        search.Index.load(broken)
    message = str(caught.value)
    assert named in message and "\n" not in message, message
    assert "holds 357 rows but" not in message


def test_malformed_queries_are_refused_in_one_line(index_dir, tiny_run):
    """Before: IndexError (3-D features), silent features of [0, 1] floats, raw TF errors
    (1 channel, 0x0), a 2x2 image searched where every other path wants 8 px."""
    index = search.Index.load(index_dir)
    with pytest.raises(UserError, match=r"shape \[2, 1, 32\].*features \[Q, 32\]"):
        index.search(np.zeros((2, 1, 32), np.float32), k=2)
    image = np.full((32, 32, 3), 100, np.uint8)
    cases = {
        "image 1 has dtype float32; query images are uint8": (image / 255).astype(np.float32),
        r"shape \[32, 32, 1\], not \[H, W, 3\]": image[..., :1],
        "0x0 px; .* at least 8x8 px": image[:0, :0],
        "2x2 px; .* at least 8x8 px": image[:2, :2],
    }
    for match, bad in cases.items():
        with pytest.raises(UserError, match=match):
            index.search([image, bad], k=2, encoder=tiny_run)
    assert index.search([image[:8, :8]], k=2, encoder=tiny_run)[0].shape == (1, 2)


def test_query_images_pass_the_decode_gate(tmp_path):
    """Before: a 20000x20000 PNG query was decoded in full (2.1 GB)."""
    huge = _png_header(str(tmp_path / "huge.png"), 20000, 20000)
    with pytest.raises(UserError, match=r"huge.png .*20000x20000.*data.max_pixels"):
        search.read_query_images(huge)


def test_non_finite_rows_are_never_neighbours(tmp_path):
    """Issue 33 MED 13: a NaN index row ranked inside the top-k above exact cos-1.0
    matches (shown as `nan`). It is left out, and the search warns how many."""
    x = np.random.default_rng(6).normal(size=(10, 4)).astype(np.float32)
    x[2] = np.nan
    x[5, 1] = np.inf
    index = search.Index.load(write_index(tmp_path / "emb", x))
    with pytest.warns(UserWarning, match="2 of the 10 rows"):
        rows, sims = index.search(x[[0, 7]], k=8)
    assert rows.shape == (2, 8) and np.all(np.isfinite(sims))
    assert rows[0, 0] == 0 and rows[1, 0] == 7
    assert sims[:, 0] == pytest.approx(1.0, abs=1e-5)
    assert not np.isin(rows, [2, 5]).any()
    assert index.skipped_nonfinite == 2


def _smooth_images(n, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    return tf.cast(tf.image.resize(small, [32, 32], method="bicubic"), tf.uint8).numpy()


def test_a_name_with_mathtext_draws_as_plain_text(index_dir, tiny_run, tmp_path):
    """Issue 33 MED 8: a query named `a$\\frac$b` failed the grid with "error: \\frac"."""
    query = tmp_path / "a$\\frac$b.png"
    tf.io.write_file(str(query), tf.io.encode_png(_smooth_images(1)[0]))
    out = tmp_path / "grid.png"
    results = search.search_files(
        index_dir, str(query), k=3, out_png=str(out), thumb=16, encoder=tiny_run
    )
    assert len(results) == 1 and out.exists()


def test_moved_indexed_images_are_drawn_missing_and_counted(tiny_run, tmp_path):
    """Issue 33 MED 10: a grid over images moved since embedding failed with a
    NotFoundError traceback; the thumbnails are skipped and counted instead."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(_smooth_images(6, seed=1)):
        tf.io.write_file(str(folder / f"img{i}.png"), tf.io.encode_png(image))
    data = load_run_config(tiny_run).data
    data.source, data.path = "folder", str(folder)
    index = str(tmp_path / "emb")
    embed.embed(tiny_run, data, "test", index, verbose=0, projector_examples=0, queries=0)
    query = tmp_path / "query.png"
    shutil.copy(folder / "img2.png", query)
    shutil.move(str(folder), str(tmp_path / "moved"))
    out = tmp_path / "grid.png"
    with pytest.warns(UserWarning, match="3 of the 3 neighbour images are no longer"):
        results = search.search_files(
            index, str(query), k=3, out_png=str(out), thumb=16, encoder=tiny_run
        )
    assert results[0]["neighbours"][0]["id"].endswith("img2.png") and out.exists()
