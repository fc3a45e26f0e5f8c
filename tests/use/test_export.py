"""The deployable SavedModel: raw pixels in, the encoder's named features out, no project code needed."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, TINY, fresh_env, one_error_line, run_command

from amdim_tf.data import augment
from amdim_tf.methods import AMDIMEncoder
from amdim_tf.run import loader
from amdim_tf.use import export

SIZE = 32
ATOL = 1e-5


def tiny_encoder():
    keras.utils.set_random_seed(0)
    enc = AMDIMEncoder(SIZE, ndf=4, n_rkhs=16, n_depth=1, use_bn=True)
    enc.build((None, SIZE, SIZE, 3))
    # Non-trivial moving statistics, so a BatchNorm left in training mode (or using the
    # initial mean 0 / variance 1) would change the outputs.
    rng = np.random.default_rng(1)
    for v in enc.non_trainable_variables:
        if "moving_mean" in v.path:
            v.assign(rng.normal(0.0, 0.1, v.shape).astype("float32"))
        elif "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
    return enc


def reference(enc, pixels01, preset="cifar"):
    """What the export must return: the in-memory encoder on eval-normalised pixels."""
    out = enc(export.normalise(tf.constant(pixels01, tf.float32), preset), training=False)
    out = {k: out[k].numpy() for k in ("r1", "r5", "r7")}
    out["global"] = out["r1"].reshape(len(pixels01), -1)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    enc = tiny_encoder()
    export_dir = export.export_encoder(enc, str(base / "1"))
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    return dict(
        enc=enc,
        base=str(base),
        export_dir=export_dir,
        pixels=pixels,
        expected=reference(enc, pixels.astype(np.float32) / 255.0),
        loaded=loader.open_encoder(export_dir).saved_model,
    )


def assert_features_equal(got, expected):
    assert sorted(got) == ["global", "r1", "r5", "r7"]
    for k, v in expected.items():
        np.testing.assert_allclose(np.asarray(got[k]), v, atol=ATOL, err_msg=k)


def test_layout_and_config(exported):
    d = exported["export_dir"]
    assert os.path.exists(os.path.join(d, "saved_model.pb"))
    assert os.path.isdir(os.path.join(d, "variables"))
    cfg = loader.read_export_config(exported["base"])  # base dir resolves to version 1
    assert {k: cfg[k] for k in ("image_size", "ndf", "n_rkhs", "n_depth", "preset")} == dict(
        image_size=32, ndf=4, n_rkhs=16, n_depth=1, preset="cifar"
    )
    assert cfg["outputs"] == ["r1", "r5", "r7", "global"]
    sigs = exported["loaded"].signatures
    assert set(sigs) == {"serving_default", "serve_float"}
    (spec,) = sigs["serving_default"].structured_input_signature[1].values()
    assert spec.shape.as_list() == [None, None, None, 3] and spec.dtype == tf.uint8
    (spec,) = sigs["serve_float"].structured_input_signature[1].values()
    assert spec.shape.as_list() == [None, SIZE, SIZE, 3] and spec.dtype == tf.float32


def test_fresh_process_without_project_code_gives_same_features(exported, tmp_path):
    """One client process without the package: the same features for uint8 and float
    pixels, per image independent of the batch, and 0 rows out for 0 images in (TF
    Serving clients expect that; the convolutions alone fail), by signature and function."""
    pixels = exported["pixels"]
    np.save(tmp_path / "uint8.npy", pixels)
    np.save(tmp_path / "float.npy", pixels.astype(np.float32) / 255.0)
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["amdim_tf"] = None  # the package is installed: make any import of it fail
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({exported["export_dir"]!r})
        for name, key in (("serving_default", "uint8"), ("serve_float", "float")):
            x = tf.constant(np.load(key + ".npy"))
            # The concrete signature is what TF Serving runs.
            out = m.signatures[name](images=x)
            np.savez(key + "_out.npz", **{{k: v.numpy() for k, v in out.items()}})
            batch1 = m.signatures[name](images=x[:1])
            np.save(key + "_first.npy", batch1["global"].numpy())
        shapes = {{}}
        for name, dtype in (("serving_default", tf.uint8), ("serve_float", tf.float32)):
            empty = tf.zeros([0, {SIZE}, {SIZE}, 3], dtype)
            for how, out in (
                ("signature", m.signatures[name](images=empty)),
                ("function", getattr(m, name)(empty)),
            ):
                shapes[name + " " + how] = {{k: v.shape.as_list() for k, v in out.items()}}
        print(json.dumps(shapes))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=fresh_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for key in ("uint8", "float"):
        with np.load(tmp_path / f"{key}_out.npz") as got:
            assert_features_equal(dict(got), exported["expected"])
        # BatchNorm in inference mode: an image's features do not depend on its batch.
        np.testing.assert_allclose(
            np.load(tmp_path / f"{key}_first.npy"), exported["expected"]["global"][:1], atol=ATOL
        )
    shapes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(shapes) == 4
    for got in shapes.values():
        assert got == {
            "r1": [0, 1, 1, 16],
            "r5": [0, 5, 5, 16],
            "r7": [0, 7, 7, 16],
            "global": [0, 16],
        }


def test_tfsm_layer_gives_same_features(exported):
    layer = keras.layers.TFSMLayer(exported["export_dir"], call_endpoint="serving_default")
    assert_features_equal(layer(exported["pixels"]), exported["expected"])
    layer = keras.layers.TFSMLayer(exported["export_dir"], call_endpoint="serve_float")
    assert_features_equal(
        layer(exported["pixels"].astype(np.float32) / 255.0), exported["expected"]
    )


@pytest.mark.parametrize(
    "shape", [(2, 28, 28, 3), (2, 32, 32, 1), (32, 32, 3)], ids=["size", "channels", "rank"]
)
def test_serve_float_takes_only_the_evaluation_view(exported, shape):
    bad = tf.zeros(shape, tf.float32)
    # Concrete signatures (TF Serving) ignore the spec's static shape: our in-graph check.
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"expects images of shape \[B, 32, 32, 3\]"
    ):
        exported["loaded"].signatures["serve_float"](images=bad)


@pytest.mark.parametrize(
    "shape, why",
    [
        ((2, 7, 40, 3), "H, W >= 8 px"),
        ((2, 32, 32, 1), r"\[B, H, W, 3\]"),
        ((32, 32, 3), "B, H, W"),
    ],
    ids=["too small", "channels", "rank"],
)
def test_serving_default_refuses_what_no_view_can_make_an_image_of(exported, shape, why):
    """Issue 20 trap 7: another size failed deep in the graph ("Computed output size
    would be negative"); now only an image under the minimum is refused, naming it."""
    bad = tf.zeros(shape, tf.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match=why):
        exported["loaded"].signatures["serving_default"](images=bad)


def test_serving_default_takes_any_size_as_evaluation_views_it(exported):
    """Issue 20 trap 7: the signature took exactly uint8 [B, 32, 32, 3]."""
    big = np.random.default_rng(5).integers(0, 256, (2, 50, 41, 3), dtype=np.uint8)
    views = augment.eval_pixels(big, "cifar").numpy()  # evaluation's view, in [0, 1]
    got = exported["loaded"].signatures["serving_default"](images=tf.constant(big))
    assert_features_equal(got, reference(exported["enc"], views))
    small = big[:, :20, :20]  # upsampled, as evaluation upsamples
    got = exported["loaded"].signatures["serving_default"](images=tf.constant(small))
    want = reference(exported["enc"], augment.eval_pixels(small, "cifar").numpy())
    np.testing.assert_allclose(got["global"], want["global"], atol=ATOL)


def test_serve_float_rejects_0_255_pixels(exported):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"pixels in \[0, 1\]"):
        exported["loaded"].signatures["serve_float"](
            images=tf.constant(exported["pixels"].astype(np.float32))
        )


def test_normalisation_matches_the_training_pipeline():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    x = image.astype(np.float32) / 255.0
    np.testing.assert_allclose(
        export.normalise(x, "cifar"), augment.eval_view(image, "cifar"), atol=1e-6
    )
    for preset in ("stl", "imagenet"):
        np.testing.assert_allclose(
            augment.denormalise(export.normalise(x, preset), preset), x, atol=1e-6
        )


def test_refuses_to_overwrite_a_version(exported):
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_encoder(exported["enc"], exported["export_dir"])
    with pytest.raises(ValueError, match="image_size=64 differs"):
        export.export_encoder(exported["enc"], exported["export_dir"] + "_x", image_size=64)


def test_tool_exports_saved_weights(tiny_config, tmp_path):
    from amdim_tf.methods import build_encoder

    keras.utils.set_random_seed(0)
    config = tiny_config
    enc = build_encoder(config)
    enc.build((None, SIZE, SIZE, 3))
    weights = str(tmp_path / "encoder.weights.h5")
    enc.save_weights(weights)
    # The digits demo's config, tiny: the same architecture as the tiny_config fixture.
    proc = run_command(
        "export",
        f"--config={ROOT}/{TINY}",
        f"--weights={weights}",
        f"--out={tmp_path / 'out'}",
        "--version=3",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tensorflow/serving" in proc.stdout
    export_dir = tmp_path / "out" / "3"
    with open(export_dir / loader.EXPORT_CONFIG_FILE) as f:
        assert json.load(f)["ndf"] == config.model.ndf
    pixels = np.random.default_rng(4).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    got = loader.open_encoder(str(tmp_path / "out")).saved_model.signatures["serving_default"](
        images=tf.constant(pixels)
    )
    assert_features_equal(got, reference(enc, pixels.astype(np.float32) / 255.0))


def test_tool_user_error_is_one_line(tmp_path):
    proc = run_command(
        "export",
        f"--config={ROOT}/{TINY}",
        f"--weights={tmp_path / 'missing.weights.h5'}",
        f"--out={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert "missing.weights.h5 does not exist" in one_error_line(proc)
    assert not (tmp_path / "out").exists()


def test_tool_checks_the_edge_features_before_writing_anything(tiny_run, tmp_path):
    """Issue 33 LOW 30: --features=r9 was refused only after the SavedModel was written."""
    proc = run_command(
        "export", f"--workdir={tiny_run}", f"--out={tmp_path / 'out'}",
        "--format=savedmodel,litert", "--features=r1,r9", cwd=tmp_path,
    )  # fmt: skip
    assert "features r1,r9: use r1 plus any of r5,r7" in one_error_line(proc)
    assert not (tmp_path / "out").exists()


class Killed(Exception):
    """What a kill between writing the SavedModel and finishing the export looks like."""


def kill_after_savedmodel(monkeypatch):
    """Dies on writing amdim_encoder.json, the step after the SavedModel is on disk."""
    dump = json.dump

    def dump_or_die(obj, f, **kwargs):
        if getattr(f, "name", "").endswith(loader.EXPORT_CONFIG_FILE):
            raise Killed
        dump(obj, f, **kwargs)

    monkeypatch.setattr(json, "dump", dump_or_die)


def test_interrupted_export_leaves_nothing_and_a_rerun_succeeds(tmp_path, monkeypatch):
    target = tmp_path / "base" / "1"
    with monkeypatch.context() as m:
        kill_after_savedmodel(m)
        with pytest.raises(Killed):
            export.export_encoder(tiny_encoder(), str(target))
    assert not target.exists()
    assert os.listdir(tmp_path / "base") == []  # no staging directory left behind
    export.export_encoder(tiny_encoder(), str(target))
    assert loader.read_export_config(str(tmp_path / "base"))["ndf"] == 4


def test_interrupted_overwrite_keeps_the_old_version(exported, tmp_path, monkeypatch):
    target = tmp_path / "1"
    shutil.copytree(exported["export_dir"], target)
    before = {p: (target / p).read_bytes() for p in ("saved_model.pb", loader.EXPORT_CONFIG_FILE)}
    keras.utils.set_random_seed(0)
    wider = AMDIMEncoder(SIZE, ndf=8, n_rkhs=16, n_depth=1)
    with monkeypatch.context() as m:
        kill_after_savedmodel(m)
        with pytest.raises(Killed):
            export.export_encoder(wider, str(target), overwrite=True)
    assert {p: (target / p).read_bytes() for p in before} == before
    assert os.listdir(tmp_path) == ["1"]
    export.export_encoder(wider, str(target), overwrite=True)
    assert loader.read_export_config(str(target))["ndf"] == 8
    assert os.listdir(tmp_path) == ["1"]


def test_sigkilled_export_leftover_is_ignored_then_cleaned(exported, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(exported["export_dir"], base / "1")
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = [{os.path.join(ROOT, "tests")!r}, {os.path.join(ROOT, "tests", "use")!r}]
        from amdim_tf.use import export
        from test_export import tiny_encoder
        import json
        def die(obj, f, **kwargs):  # on writing amdim_encoder.json, after the SavedModel
            os.kill(os.getpid(), signal.SIGKILL)
        json.dump = die
        export.export_encoder(tiny_encoder(), {str(base / "2")!r})
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (base / "2").exists()
    # The leftover is no version: readers (and TF Serving) still see version 1.
    assert loader.resolve_export_dir(str(base)) == str(base / "1")
    export.export_encoder(tiny_encoder(), str(base / "2"))
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert loader.resolve_export_dir(str(base)) == str(base / "2")


def test_version_parked_by_a_kill_between_the_renames_is_recovered(exported, tmp_path):
    """Issue 21, 7: an export --overwrite SIGKILLed between its two renames leaves the old
    version parked beside its place; the next export must put it back, not delete it."""
    base = tmp_path / "base"
    shutil.copytree(exported["export_dir"], base / "1")
    before = {p: (base / "1" / p).read_bytes() for p in ("saved_model.pb", "amdim_encoder.json")}
    dead = 2**31 - 2  # above any pid_max: no live process has it
    os.rename(base / "1", base / f".1.previous-{dead}")
    shutil.copytree(exported["export_dir"], base / f".1.staging-{dead}-x1y2z3")  # the new one
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_encoder(exported["enc"], str(base / "1"))  # without --overwrite
    assert {p: (base / "1" / p).read_bytes() for p in before} == before
    assert loader.resolve_export_dir(str(base)) == str(base / "1")
    export.export_encoder(exported["enc"], str(base / "1"), overwrite=True)
    assert os.listdir(base) == ["1"]


@pytest.mark.parametrize(
    "part", ["amdim_encoder.json", "variables", "saved_model.pb"], ids=["json", "vars", "pb"]
)
def test_incomplete_version_is_refused_naming_what_is_missing(exported, tmp_path, part):
    base = tmp_path / "base"
    shutil.copytree(exported["export_dir"], base / "1")
    shutil.copytree(exported["export_dir"], base / "2")
    removed = base / "2" / part
    if removed.is_dir():
        shutil.rmtree(removed)
    else:
        removed.unlink()
    name = part + "/" if part == "variables" else part
    for path in (base, base / "2"):
        for load in (loader.read_export_config, loader.open_encoder):
            with pytest.raises(ValueError, match=rf"incomplete.*missing {name}.*--overwrite"):
                load(str(path))
    with pytest.raises(FileExistsError, match=rf"incomplete export \(missing {name}\)"):
        export.export_encoder(exported["enc"], str(base / "2"))
    export.export_encoder(exported["enc"], str(base / "2"), overwrite=True)
    assert loader.read_export_config(str(base))["ndf"] == 4
