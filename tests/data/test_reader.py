"""The one image reader (issues 20, 21 and 24): the decode gate, odd files, one scan per source.

Every consumer reads image files through the folder source; these tests give it what
users' folders hold (WebP, a FIFO, symlink loops, dangling links, images at the top of a
labelled folder, an image whose header claims 20000x20000) and check that each is read,
or skipped, counted and named, never a hang or a traceback.
"""

import logging
import os
import resource
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_data

from amdim_tf import data as data_lib
from amdim_tf.data import augment, decode
from amdim_tf.use import visualize

BATCH = 2


def _png(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return tf.io.encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).numpy()


def _huge_png(width, height):
    """A valid-looking PNG of a few hundred bytes whose IHDR claims width x height."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    # One compressed scanline of zeros: a decoder would allocate the whole image first.
    idat = zlib.compress(b"\x00" * (1 + 3 * width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _webp(h, w):
    """A lossless WebP of TF's own making is not possible (no encoder): Pillow writes it."""
    PIL = pytest.importorskip("PIL.Image")
    import io

    out = io.BytesIO()
    rng = np.random.default_rng(1)
    PIL.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(out, "WEBP", lossless=True)
    return out.getvalue()


def _write(path, contents):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(contents)


# -- the decode gate -------------------------------------------------------------------


def test_header_sizes_of_every_format():
    assert decode.header_size(_png(5, 7)) == (5, 7)
    assert decode.header_size(tf.io.encode_jpeg(np.zeros((9, 4, 3), np.uint8)).numpy()) == (9, 4)
    assert decode.header_size(tf.io.encode_png(np.zeros((3, 11, 1), np.uint8)).numpy()) == (3, 11)
    assert decode.header_size(b"GIF89a" + struct.pack("<HH", 640, 480) + b"\0" * 8) == (480, 640)
    bmp = b"BM" + b"\0" * 12 + struct.pack("<Iii", 40, 300, -200) + b"\0" * 8
    assert decode.header_size(bmp) == (200, 300)
    assert decode.header_size(_webp(6, 13)) == (6, 13)
    vp8x = b"RIFF\0\0\0\0WEBPVP8X" + b"\0" * 8 + (19999).to_bytes(3, "little") * 2
    assert decode.header_size(vp8x) == (20000, 20000)
    assert decode.header_size(b"not an image") is None
    assert decode.header_size(b"\x89PNG\r\n\x1a\n\0\0") is None  # cut short


def test_gate_refuses_by_decoded_pixels_and_jpeg_counts_at_its_dct_scale():
    big = _huge_png(20000, 20000)
    reason = decode.refusal(big, 2**25)
    assert "20000x20000" in reason and "data.max_pixels" in reason
    assert decode.refusal(big, 0) is None  # 0 turns the gate off
    assert decode.refusal(_png(32, 32), 2**25) is None
    # A 6000 px JPEG decodes at 1/8 scale: 750x750 pixels are allocated, not 36M.
    jpeg = b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", 6000, 6000) + b"\x03" + b"\0" * 9
    assert decode.decoded_pixels(jpeg) == 750 * 750
    assert decode.refusal(jpeg, 750 * 750) is None
    assert decode.refusal(jpeg, 750 * 750 - 1) is not None


def test_a_tiny_png_claiming_20000_squared_is_skipped_without_decoding(tmp_path, caplog):
    root = tmp_path / "data"
    for i in range(3):
        _write(str(root / "a" / f"{i}.png"), _png(32, 32, i))
    bomb = root / "a" / "bomb.png"
    _write(str(bomb), _huge_png(20000, 20000))
    assert os.path.getsize(bomb) < 100_000  # 1.2 GB of pixels in a small file
    data = make_data(source="folder", labels="folders", path=str(root), image_size=32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    source = data_lib.open_source(data)
    with caplog.at_level(logging.WARNING):
        # No split dirs: the 3 good images are split into "train" and a held-out "test".
        assert source.count("train") + source.count("test") == 3
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 600, f"peak RSS grew {grown_mib:.0f} MiB: the image was decoded"
    assert source.skipped("train") == [str(bomb)]
    assert "Skipping 1 of 4" in caplog.text and "bomb.png" in caplog.text
    assert "data.max_pixels" in caplog.text  # the warning says why, not "does not decode"
    with pytest.raises(ValueError, match=r"bomb\.png.*20000x20000.*data\.max_pixels"):
        data_lib.open_source(
            make_data(source="folder", labels="folders", path=str(root), strict=True)
        ).count("train")


def test_npz_and_tfrecord_records_go_through_the_gate(tmp_path):
    good = [_png(32, 32, i) for i in range(3)]
    records = [*good, _huge_png(20000, 20000)]
    blob = np.frombuffer(b"".join(records), np.uint8)
    offsets = np.cumsum([0] + [len(r) for r in records])
    path = str(tmp_path / "d.npz")
    np.savez(path, train_jpeg=blob, train_offsets=offsets, train_labels=np.array([0, 1, 0, 1]))
    source = data_lib.open_source(make_data(source="npz", path=path))
    assert source.count("train") == 3 and source.skipped("train") == ["train record 3"]

    with tf.io.TFRecordWriter(str(tmp_path / "train-0")) as writer:
        for i, encoded in enumerate(records):
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )
    data = make_data(source="tfrecord", path=str(tmp_path / "{split}-*"), num_classes=2)
    source = data_lib.open_source(data)
    assert source.count("train") == 3 and "record 3" in source.skipped("train")[0]


# -- odd files -------------------------------------------------------------------------


@pytest.fixture
def odd_folder(tmp_path):
    """root/{a,b}/ with 2 readable PNGs each, a WebP, and every kind of odd name."""
    root = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(2):
            _write(str(root / cls / f"{i}.png"), _png(32, 32, i))
    _write(str(root / "a" / "photo.webp"), _webp(40, 30))
    os.mkfifo(root / "b" / "f.png")  # opening it to read would block forever
    os.symlink("loop.png", root / "b" / "loop.png")  # ELOOP
    os.symlink("gone.png", root / "b" / "dangling.png")
    _write(str(root / "top.png"), _png(32, 32, 9))  # at the top of a labelled folder
    return root


def test_webp_is_read_and_odd_names_are_skipped_counted_and_named(odd_folder, caplog):
    source = data_lib.open_source(
        make_data(source="folder", labels="folders", path=str(odd_folder), eval_split="train")
    )
    with caplog.at_level(logging.WARNING):
        labels = source.labels("train")
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1]  # the WebP counts, top.png is no class's
    skipped = sorted(os.path.basename(p) for p in source.skipped("train"))
    # top.png is no class's: skipped and named as such (issue 32), never in silence.
    assert skipped == ["dangling.png", "f.png", "loop.png", "top.png"]
    assert "Skipping 3 of 8" in caplog.text
    assert "Skipping 1 images outside its class folders" in caplog.text
    assert "top.png" in caplog.text
    # Readable images are never reported as unreadable.
    assert not any(os.path.basename(p) == "photo.webp" for p in source.skipped("train"))
    batch = next(iter(data_lib.make_pretrain_dataset(source, BATCH, seed=0)))
    assert batch[0][0].shape == (BATCH, 32, 32, 3)
    with pytest.raises(ValueError, match=r"dangling\.png.*cannot be read.*data\.strict"):
        data_lib.open_source(
            make_data(source="folder", labels="folders", path=str(odd_folder), strict=True)
        ).count("train")


def test_a_sub_symlink_to_the_root_reports_nothing_unreadable(tmp_path):
    root = tmp_path / "data"
    for cls in ("a", "b"):
        _write(str(root / cls / "0.png"), _png(32, 32))
    os.symlink(".", root / "sub")
    source = data_lib.open_source(
        make_data(source="folder", labels="folders", path=str(root), eval_split="train")
    )
    assert source.skipped("train") == []
    assert source.count("train") >= 2


def test_visualize_reads_a_folder_through_the_same_reader(tmp_path):
    flat = tmp_path / "flat"
    for name in ("0.png", "1.png"):
        _write(str(flat / name), _png(32, 32))
    _write(str(flat / "broken.png"), b"\x89PNG\r\n\x1a\n garbage")
    _write(str(flat / "photo.webp"), _webp(40, 30))
    os.mkfifo(flat / "fifo.png")
    images = visualize.folder_images(str(flat), "cifar", n=16)
    assert images.shape == (3, 32, 32, 3)  # the two PNGs and the WebP; the rest skipped
    strict = make_data(source="folder", strict=True)
    with pytest.raises(ValueError, match=r"broken\.png.*data\.strict"):
        visualize.folder_images(str(flat), "cifar", n=16, data=strict)


# -- one scan per opened source --------------------------------------------------------


def test_an_opened_source_scans_once_and_is_passed_down(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(3):
            _write(str(root / cls / f"{i}.png"), _png(32, 32, i))
    calls = []
    real = data_lib.sources.folder._valid_files
    monkeypatch.setattr(
        data_lib.sources.folder,
        "_valid_files",
        lambda *a: calls.append(a[2]) or real(*a),
    )
    source = data_lib.open_source(make_data(source="folder", labels="folders", path=str(root)))
    data_lib.num_pretrain_examples(source)
    data_lib.num_classes(source)
    data_lib.make_pretrain_dataset(source, BATCH, seed=0)
    data_lib.make_eval_dataset(source, "train", BATCH, max_examples=4, sample_seed=0)
    data_lib.make_eval_dataset(source, "train", BATCH, max_examples=4, balanced=True)
    assert len(calls) == 1
    # A new opened source scans again (files may have changed between runs).
    data_lib.num_examples(make_data(source="folder", labels="folders", path=str(root)), "train")
    assert len(calls) == 2


def test_preset_rule_has_one_home():
    assert augment.preset_for("", 64) == "stl"
    assert augment.preset_for("cifar", 32) == "cifar"
    with pytest.raises(ValueError, match="data.augment='stl' produces 64-pixel views"):
        augment.preset_for("stl", 32)
