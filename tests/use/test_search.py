"""Search over an embed output: exact top-k equals brute force, images find themselves,
a truncated index and a foreign encoder are refused by name."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from amdim_tf.run import loader as backbone
from amdim_tf.run.run_config import load_run_config
from amdim_tf.use import embed, search


@pytest.fixture(scope="module")
def index_dir(tiny_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("search") / "emb")
    config = load_run_config(tiny_run)
    embed.embed(tiny_run, config.data, "test", out, verbose=0, projector_examples=0, queries=0)
    return out


def _brute_force(q, x, k, exclude_self=False):
    sims = search.normalise(q) @ search.normalise(x).T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, 1)


def test_blocked_topk_equals_brute_force_and_leaves_out_only_the_row_itself():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x[7] = x[3]  # an exact duplicate: it must stay a neighbour of row 3 (cosine 1)
    xn = search.normalise(x)
    rows, sims = search.topk_cosine(xn[:50], xn, 5, block=7)
    want_rows, want_sims = _brute_force(x[:50], x, 5)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    np.testing.assert_array_equal(rows[:, 0], np.where(np.arange(50) == 7, 3, np.arange(50)))
    rows, sims = search.topk_cosine(xn, xn, 4, self_offset=0, block=64)
    want_rows, want_sims = _brute_force(x, x, 4, exclude_self=True)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    assert rows[3, 0] == 7 and rows[7, 0] == 3 and sims[3, 0] == pytest.approx(1.0, abs=1e-5)
    assert not np.any(rows == np.arange(300)[:, None])
    with pytest.raises(ValueError, match="k=300"):
        search.topk_cosine(xn, xn, 300, self_offset=0)


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
