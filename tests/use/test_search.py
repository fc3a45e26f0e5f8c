"""Search over an embed output: exact top-k equals brute force, images find themselves,
a truncated index and a foreign encoder are refused by name."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from synthetic_index import write_index

from amdim_tf.run import loader as backbone
from amdim_tf.run.run_config import load_run_config
from amdim_tf.use import embed, search


@pytest.fixture(scope="module")
def index_dir(tiny_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("search") / "emb")
    config = load_run_config(tiny_run)
    embed.embed(tiny_run, config.data, "test", out, verbose=0, projector_examples=0, queries=0)
    return out


def test_features_and_images_find_themselves(index_dir, tmp_path):
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
    results = search.search_files(index_dir, str(folder), k=4, out_png=out, thumb=16)
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


def test_a_name_with_mathtext_draws_as_plain_text(index_dir, tmp_path):
    """Issue 33 MED 8: a query named `a$\\frac$b` failed the grid with "error: \\frac"."""
    query = tmp_path / "a$\\frac$b.png"
    tf.io.write_file(str(query), tf.io.encode_png(_smooth_images(1)[0]))
    out = tmp_path / "grid.png"
    results = search.search_files(index_dir, str(query), k=3, out_png=str(out), thumb=16)
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
        results = search.search_files(index, str(query), k=3, out_png=str(out), thumb=16)
    assert results[0]["neighbours"][0]["id"].endswith("img2.png") and out.exists()
