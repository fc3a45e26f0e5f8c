"""LiteRT and ONNX files of the encoder, checked against the SavedModel they sit beside."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import one_error_line, run_command, run_tool
from test_export import SIZE, reference, tiny_encoder

from amdim_tf.run import loader
from amdim_tf.use import edge, edge_cost, export


def _missing(module):
    try:
        __import__(module)
    except ImportError:
        return True
    return False


needs_converters = pytest.mark.skipif(
    any(_missing(m) for m in ("tf2onnx", "onnxruntime", "ai_edge_litert")),
    reason="the optional converters are not installed: pip install 'amdim-tf[edge]' "
    "(requirements-dev.txt pins them)",
)


def images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    enc = tiny_encoder()
    export_dir = export.export_encoder(enc, str(tmp_path_factory.mktemp("edge") / "1"))
    results = edge.export_edge(
        enc,
        export_dir,
        ["litert", "litert_int8", "litert_int8w", "onnx"],
        images(8, 0),
        representative=images(16, 1),
        features=("r1", "r5"),
    )
    return dict(enc=enc, export_dir=export_dir, results=results)


@needs_converters
@pytest.mark.parametrize("fmt", ["litert", "onnx", "litert_int8", "litert_int8w"])
def test_each_format_round_trips_within_tolerance(exported, fmt):
    meta = edge.edge_files(exported["export_dir"])[fmt]
    check = meta["check"]
    assert check["images"] == 8 and meta["outputs"] == ["r1", "r5"]
    for k in ("r1", "r5"):
        assert 0 <= check[k]["max_rel"] <= edge.TOLERANCES[fmt], (k, check[k])
    # The file on its own, on images the check never saw, against the in-memory encoder.
    pixels = images(5, 2)
    got = edge.run_batched(edge.runner(meta["path"]), pixels)
    assert sorted(got) == ["r1", "r5"]
    expected = reference(exported["enc"], pixels.astype(np.float32) / 255.0)
    for k, d in edge.compare(got, expected).items():
        assert d["max_rel"] <= edge.TOLERANCES[fmt], (k, d)
        if fmt not in ("litert_int8", "litert_int8w"):
            np.testing.assert_allclose(got[k], expected[k], atol=1e-5, err_msg=k)
    stored = loader.read_export_config(exported["export_dir"])["edge"][fmt]
    assert stored["sha256"] == meta["sha256"] and stored["bytes"] == os.path.getsize(meta["path"])


@needs_converters
@pytest.mark.parametrize("fmt", ["litert", "onnx", "litert_int8", "litert_int8w"])
def test_each_format_refuses_an_image_of_another_size(exported, fmt):
    """Issue 32 trap 4: a 150x200 image through encoder.tflite gave "r1" [1, 30, 43, D]
    with no error, while the ONNX file refused it. Both refuse: the file in its own
    runtime, and `runner` with one line naming the size."""
    path = edge.edge_files(exported["export_dir"])[fmt]["path"]
    wrong = np.random.default_rng(7).integers(0, 256, (1, 150, 200, 3), dtype=np.uint8)
    run, _ = edge._runtime(path)  # the runtime alone, as a user calls it
    for shape in ((1, 150, 200, 3), (1, 64, 64, 3), (1, 16, 64, 3)):
        with pytest.raises(Exception):  # noqa: B017 - each runtime raises its own kind
            run(np.resize(wrong, shape))
    with pytest.raises(
        ValueError, match=r"takes uint8 images \[B, 32, 32, 3\].*\[1, 150, 200, 3\]"
    ) as e:
        edge.runner(path)(wrong)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="float32"):
        edge.runner(path)(images(1, 0).astype(np.float32) / 255)  # not cast to 0 in silence


@needs_converters
def test_the_check_refuses_a_file_that_takes_another_size(tmp_path, monkeypatch):
    export_dir = export.export_encoder(tiny_encoder(), str(tmp_path / "1"))

    # A check of element counts alone: a 64x64 image would pass as 4 images of 32x32.
    def counts_only(images, size):
        return tf.reshape(tf.cast(images, tf.float32) / 255.0, [-1, size, size, 3])

    monkeypatch.setattr(edge, "_only_size", counts_only)
    with pytest.raises(edge.EdgeCheckError, match="64x64 px.*instead of refusing"):
        edge.export_edge(tiny_encoder(), export_dir, ["litert"], images(2, 0))
    assert not os.path.exists(os.path.join(export_dir, edge.FILENAMES["litert"]))


@needs_converters
def test_int8_file_is_smaller_and_differs_more_than_float(exported):
    files = edge.edge_files(exported["export_dir"])
    assert files["litert_int8"]["bytes"] < files["litert"]["bytes"]
    assert files["litert_int8w"]["bytes"] < files["litert"]["bytes"]
    int8, float_ = files["litert_int8"]["check"]["r1"], files["litert"]["check"]["r1"]
    assert int8["max_rel"] > 10 * float_["max_rel"]  # the check can tell them apart


def perturbed_encoder():
    enc = tiny_encoder()
    kernel = next(v for v in enc.trainable_variables if "kernel" in v.path)
    kernel.assign(kernel.numpy() * 1.05)
    return enc


@needs_converters
@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_a_perturbed_file_is_refused_and_the_previous_one_stays(exported, tmp_path, fmt):
    export_dir = str(tmp_path / "1")
    shutil.copytree(exported["export_dir"], export_dir)
    path = os.path.join(export_dir, edge.FILENAMES[fmt])
    with open(path, "rb") as f:
        before = f.read()
    with pytest.raises(edge.EdgeCheckError, match=r"r1 max_abs \S+ max_rel \S+.*tolerance") as e:
        edge.export_edge(perturbed_encoder(), export_dir, [fmt], images(8, 0), overwrite=True)
    assert "\n" not in str(e.value)
    with open(path, "rb") as f:
        assert f.read() == before
    assert sorted(os.listdir(tmp_path)) == ["1"]
    assert not [f for f in os.listdir(export_dir) if f.startswith(".")]  # no staging left
    assert fmt in edge.edge_files(export_dir)  # metadata still matches the kept file
    # The check alone also catches a file that no longer matches its SavedModel.
    other = str(tmp_path / "other" / "1")
    enc = perturbed_encoder()
    export.export_encoder(enc, other)
    with pytest.raises(edge.EdgeCheckError, match="beyond the tolerance"):
        edge.check_file(path, other, images(4, 3), edge.TOLERANCES[fmt])


@needs_converters
def test_an_existing_file_is_kept_without_overwrite(exported):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        edge.export_edge(exported["enc"], exported["export_dir"], ["litert"], images(2, 0))


def test_a_missing_converter_is_one_line_naming_the_package(tmp_path, monkeypatch):
    export_dir = export.export_encoder(tiny_encoder(), str(tmp_path / "1"))
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx -> ImportError
    with pytest.raises(edge.MissingConverterError) as e:
        edge.export_edge(tiny_encoder(), export_dir, ["litert", "onnx"], images(2, 0))
    message = str(e.value)
    assert "\n" not in message and "'tf2onnx'" in message and "pip install" in message
    assert isinstance(e.value, ValueError)  # a user error: the commands print one line
    assert sorted(os.listdir(export_dir)) == sorted(
        ["assets", "fingerprint.pb", "saved_model.pb", "variables", loader.EXPORT_CONFIG_FILE]
    )  # checked before any conversion: no LiteRT file either


def test_bad_arguments_are_refused_before_converting(tmp_path):
    with pytest.raises(ValueError, match=r"format tflite is unknown; use one or more of"):
        edge.parse_formats("savedmodel,tflite")
    export_dir = export.export_encoder(tiny_encoder(), str(tmp_path / "1"))
    with pytest.raises(ValueError, match=r"litert_int8 needs representative images"):
        edge.export_edge(tiny_encoder(), export_dir, ["litert_int8"], images(2, 0))
    with pytest.raises(ValueError, match=r"uint8 \[N, 32, 32, 3\]"):
        edge.export_edge(tiny_encoder(), export_dir, ["litert"], images(2, 0).astype(np.float32))
    with pytest.raises(ValueError, match=r"features r1,r9: use r1 plus any of r5,r7"):
        edge.export_edge(
            tiny_encoder(), export_dir, ["litert"], images(2, 0), features=["r1", "r9"]
        )


@needs_converters
def test_cost_report_has_a_row_per_file(exported):
    rng = np.random.default_rng(4)
    train = (images(40, 5), rng.integers(0, 2, 40))
    test = (images(20, 6), rng.integers(0, 2, 20))
    rows = edge_cost.cost_report(exported["export_dir"], train, test, threads=(1,), repeats=3)
    assert [r["format"] for r in rows] == [
        "savedmodel", "litert", "litert_int8", "litert_int8w", "onnx"
    ]  # fmt: skip
    for r in rows[1:]:
        assert r["latency_ms"][1] > 0 and r["max_rel"] <= edge.TOLERANCES[r["format"]]
        assert (r["n_train"], r["n_test"]) == (40, 20)
    # Float formats give the SavedModel's features, hence its accuracies.
    assert rows[1]["linear_acc"] == rows[0]["linear_acc"]
    table = edge_cost.format_table(rows)
    assert "| litert_int8 | `encoder_int8.tflite` |" in table and "(+0.00)" in table


@needs_converters
def test_command_writes_checked_files_beside_the_savedmodel(tiny_run, tmp_path):
    proc = run_tool(
        "export.py",
        f"--workdir={tiny_run}",
        f"--out={tmp_path / 'out'}",
        "--format=savedmodel,litert,onnx",
        "--check_images=8",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    export_dir = tmp_path / "out" / "1"
    for fmt in ("litert", "onnx"):
        assert f"{fmt}: {export_dir / edge.FILENAMES[fmt]}" in proc.stdout
    with open(export_dir / loader.EXPORT_CONFIG_FILE) as f:
        checks = {fmt: m["check"] for fmt, m in json.load(f)["edge"].items()}
    assert sorted(checks) == ["litert", "onnx"] and all(c["images"] == 8 for c in checks.values())
    proc = run_tool(
        "export.py", f"--workdir={tiny_run}", f"--out={tmp_path / 'out'}", "--format=litert",
        cwd=tmp_path,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(lines) == 1 and "--overwrite" in lines[0], proc.stderr


@needs_converters
def test_every_format_is_tried_and_the_refused_ones_named_after(exported, tmp_path):
    """Issue 32 trap 5: a refused litert_int8 stopped the export of the rest (never
    trying litert_int8w) and hid the check lines of the files already written."""
    export_dir = str(tmp_path / "1")
    shutil.copytree(exported["export_dir"], export_dir)
    for name in edge.FILENAMES.values():
        os.remove(os.path.join(export_dir, name))
    written = []
    with pytest.raises(
        edge.EdgeRefusedError, match=r"refused litert_int8 \(litert_int8: .*max_rel"
    ) as e:
        edge.export_edge(
            exported["enc"], export_dir, ["litert", "litert_int8", "onnx", "litert_int8w"],
            images(8, 0), representative=images(16, 1), tolerances={"litert_int8": 1e-9},
            on_written=lambda fmt, meta: written.append(fmt),
        )  # fmt: skip
    assert written == ["litert", "onnx", "litert_int8w"] == list(e.value.written)
    assert list(e.value.refused) == ["litert_int8"] and "\n" not in str(e.value)
    assert sorted(edge.edge_files(export_dir)) == ["litert", "litert_int8w", "onnx"]
    assert not os.path.exists(os.path.join(export_dir, edge.FILENAMES["litert_int8"]))


@needs_converters
def test_command_prints_each_written_file_then_names_the_refused(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(edge.TOLERANCES, "litert_int8", 1e-9)  # int8 refused, as on CIFAR-10
    proc = run_command(
        "export", f"--workdir={tiny_run}", f"--out={tmp_path / 'out'}",
        "--format=savedmodel,litert,onnx,litert_int8,litert_int8w", "--check_images=4",
        "--representative_images=8", cwd=tmp_path,
    )  # fmt: skip
    error = one_error_line(proc)
    assert "refused litert_int8 (" in error and "max_rel" in error, error
    export_dir = tmp_path / "out" / "1"
    for fmt in ("litert", "onnx", "litert_int8w"):
        assert f"{fmt}: {export_dir / edge.FILENAMES[fmt]}" in proc.stdout, proc.stdout
    assert sorted(edge.edge_files(str(export_dir))) == ["litert", "litert_int8w", "onnx"]
