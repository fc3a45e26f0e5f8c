"""load_encoder / save_encoder: a run's encoder as a Keras model users fine-tune or freeze."""

import os
import subprocess
import sys
import warnings
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_run_config

import amdim_tf
from amdim_tf.data import augment
from amdim_tf.run import checkpoints
from amdim_tf.run import loader as backbone
from amdim_tf.use import export


def _pixels(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_the_environment_is_set_before_tensorflow_loads_and_a_users_value_wins():
    code = (
        "import os; os.environ['TF_ENABLE_ONEDNN_OPTS'] = '0'; import amdim_tf, tensorflow; "
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], os.environ['KERAS_BACKEND'])"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND")
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["0", "tensorflow"]


def test_load_from_a_workdir_gives_the_trained_weights(tiny_run):
    want = backbone.open_encoder(tiny_run).encoder
    enc = amdim_tf.load_encoder(tiny_run, include_preprocessing=False)
    assert isinstance(enc, keras.Model) and enc.trainable
    x = augment.normalise(_pixels() / 255.0, "cifar")
    np.testing.assert_allclose(enc(x)["r1"], want(x, training=False)["r1"], atol=1e-6)


def test_pixel_encoder_reads_uint8_and_float_pixels_alike_as_the_export_does(tiny_run, tmp_path):
    """Issue 20 trap 1: float 0..255 pixels (what keras.utils.image_dataset_from_directory
    yields) were read as [0, 1]: features far from the right ones, no warning."""
    enc = amdim_tf.load_encoder(tiny_run, include_preprocessing=True)
    pixels = _pixels()
    from_uint8 = enc(tf.constant(pixels))["r1"]
    from_float = enc(tf.constant(pixels, tf.float32))["r1"]
    np.testing.assert_allclose(from_float, from_uint8, atol=1e-5)
    assert from_uint8.shape == (4, enc.n_rkhs)  # r1 flattened, what a Dense head reads
    # The right features: those evaluation computes from the same images.
    want = backbone.open_encoder(tiny_run).pooled_unit_views(augment.eval_pixels(pixels, "cifar"))[
        "r1"
    ]
    np.testing.assert_allclose(from_float, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"0\.\.255.*multiply") as e:
        enc(tf.constant(pixels / 255.0, tf.float32))  # [0, 1] floats: refused, not guessed
    assert len(_first_line(e)) == 1
    export_dir = str(tmp_path / "export")
    bare = amdim_tf.load_encoder(tiny_run, include_preprocessing=False)
    export.export_encoder(bare, export_dir, preset="cifar")
    loaded = backbone.open_encoder(export_dir)  # kept alive: its functions hold weak refs
    served = loaded.saved_model.serving_default(tf.constant(pixels))
    np.testing.assert_allclose(from_uint8, served["global"], atol=1e-5)


def test_load_encoder_keeps_the_pixel_contract_by_default(tiny_run, tmp_path):
    """Issue 32 trap 3: `load_encoder(path)` gave the bare encoder, which took [0, 1]
    floats to features at cosine 0.18-0.73 of the right ones, 0..255 floats to garbage and
    uint8 to a dtype error from stem_conv. With no other argument it now takes 0..255
    images of any size, as the SavedModel does; the bare encoder is asked for by name."""
    big = np.random.default_rng(6).integers(0, 256, (2, 45, 60, 3), dtype=np.uint8)
    want = backbone.open_encoder(tiny_run).pooled(big)["r1"]
    saved = amdim_tf.save_encoder(tiny_run, str(tmp_path / "encoder.keras"))
    for path in (tiny_run, saved):
        enc = amdim_tf.load_encoder(path)
        np.testing.assert_allclose(enc(tf.constant(big))["r1"], want, atol=1e-5)
        np.testing.assert_allclose(enc(tf.constant(big, tf.float32))["r1"], want, atol=1e-5)
        with pytest.raises(ValueError, match="multiply") as e:
            enc(tf.constant(big / 255.0, tf.float32))
        assert len(_first_line(e)) == 1
        out = enc(np.zeros((0, 32, 32, 3), np.uint8))  # 0 rows, as the SavedModel gives
        assert out["r1"].shape == (0, enc.n_rkhs)
    x = keras.Input((None, None, 3), dtype="uint8")  # in a graph: the batch size unknown
    model = keras.Model(x, amdim_tf.load_encoder(tiny_run, features=("r1", "r5"))(x))
    spec = tf.TensorSpec([None, None, None, 3], tf.uint8)
    traced = tf.function(model, input_signature=[spec])
    assert traced(np.zeros((0, 40, 40, 3), np.uint8))["r5"].shape == (0, 5, 5, enc.n_rkhs)
    np.testing.assert_allclose(model(big)["r1"], want, atol=1e-5)
    bare = amdim_tf.load_encoder(tiny_run, include_preprocessing=False)
    assert not isinstance(bare, backbone.PixelEncoder) and bare.ndf == 8
    # A .keras file an older commit wrote gives, by default, the r1 that commit computed.
    fixtures = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
    with np.load(os.path.join(fixtures, "encoder_529c7cc.npz")) as fixture:
        old = amdim_tf.load_encoder(os.path.join(fixtures, "encoder_529c7cc.keras"))
        want = fixture["r1"].reshape(len(fixture["pixels"]), -1)
        np.testing.assert_allclose(old(fixture["pixels"])["r1"], want, atol=1e-5)


def test_pixel_encoder_takes_any_size_as_evaluation_views_it(tiny_run):
    """Issue 20 trap 7's Keras side: another image size failed deep in the graph."""
    enc = amdim_tf.load_encoder(tiny_run, include_preprocessing=True)
    big = np.random.default_rng(3).integers(0, 256, (2, 45, 60, 3), dtype=np.uint8)
    want = backbone.open_encoder(tiny_run).pooled_unit_views(augment.eval_pixels(big, "cifar"))[
        "r1"
    ]
    np.testing.assert_allclose(enc(tf.constant(big))["r1"], want, atol=1e-5)
    x = keras.Input((None, None, 3), dtype="uint8")  # any size in a functional model
    model = keras.Model(x, enc(x)["r1"])
    np.testing.assert_allclose(model(big), want, atol=1e-5)
    with pytest.raises(ValueError, match="at least 8x8 px") as e:
        enc(np.zeros((1, 7, 40, 3), np.uint8))
    assert len(_first_line(e)) == 1


def test_fine_tuning_changes_the_encoder_and_trainable_false_freezes_it(tiny_run):
    """Issue 20 trap 8: every fit warned "Gradients do not exist" for AMDIM's r5/r7
    critic heads, which the classifier never reads; r1 needed a Flatten."""
    images = _pixels(8, seed=1)
    labels = np.arange(8) % 3

    def fit(trainable):
        enc = amdim_tf.load_encoder(tiny_run, include_preprocessing=True)
        enc.trainable = trainable
        x = keras.Input((32, 32, 3), dtype="uint8")
        y = keras.layers.Dense(3)(enc(x)["r1"])
        model = keras.Model(x, y)
        model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(True))
        before = [w.numpy().copy() for w in enc.weights]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(images, labels, batch_size=4, epochs=1, steps_per_epoch=2, verbose=0)
        assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
        changed = [
            not np.array_equal(b, w.numpy()) for b, w in zip(before, enc.weights, strict=True)
        ]
        return model, enc, changed

    model, enc, changed = fit(True)
    assert sum(changed) > len(changed) // 3, "fine-tuning left most encoder weights unchanged"
    assert not any("head5" in v.path or "head7" in v.path for v in enc.trainable_weights)
    assert set(enc(keras.Input((32, 32, 3), dtype="uint8"))) == {"r1"}  # no h5 / h7
    model, enc, changed = fit(False)
    assert not any(changed), "a frozen encoder changed (weights or BN statistics)"
    assert len(model.trainable_weights) == 2  # only the Dense kernel and bias
    enc.trainable = True  # unfreezing leaves the unused heads frozen
    assert not any("head5" in v.path for v in enc.trainable_weights)
    local = amdim_tf.load_encoder(tiny_run, include_preprocessing=True, features=("r1", "r5"))
    out = local(tf.constant(images))
    assert set(out) == {"r1", "r5"} and out["r5"].shape[1:3] == (5, 5)
    assert any("head5" in v.path for v in local.trainable_weights)


def test_save_encoder_round_trips_through_a_keras_file(tiny_run, tmp_path):
    out = str(tmp_path / "encoder.keras")
    assert amdim_tf.save_encoder(tiny_run, out) == out
    pixels = tf.constant(_pixels())
    want = amdim_tf.load_encoder(tiny_run, include_preprocessing=True)(pixels)["r1"]
    loaded = keras.saving.load_model(out)
    assert isinstance(loaded, backbone.PixelEncoder) and loaded.preset == "cifar"
    np.testing.assert_allclose(loaded(pixels)["r1"], want, atol=1e-5)
    bare = amdim_tf.load_encoder(out, include_preprocessing=False)
    assert not isinstance(bare, backbone.PixelEncoder)
    x = augment.normalise(tf.cast(pixels, tf.float32) / 255.0, "cifar")
    np.testing.assert_allclose(tf.reshape(bare(x)["r1"], [4, -1]), want, atol=1e-5)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no staged leftovers
    with pytest.raises(FileExistsError):
        amdim_tf.save_encoder(tiny_run, out)


def _first_line(excinfo):
    return str(excinfo.value).strip().splitlines()


def test_bad_inputs_get_one_line_naming_what_was_expected(tiny_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="work directory") as e:
        amdim_tf.load_encoder(str(tmp_path / "nowhere"))
    assert len(_first_line(e)) == 1
    with pytest.raises(FileNotFoundError, match="expected"):
        amdim_tf.load_encoder(str(tmp_path / "missing.keras"))
    bare = amdim_tf.load_encoder(tiny_run, include_preprocessing=False)
    export.export_encoder(bare, str(tmp_path / "export" / "1"))
    for path in (tmp_path / "export", tmp_path / "export" / "1"):  # base or version dir
        with pytest.raises(ValueError, match="SavedModel"):
            amdim_tf.load_encoder(str(path))

    other = tiny_run_config()
    other.model.ndf = 16  # another architecture
    weights = str(tmp_path / "enc.weights.h5")
    bare.save_weights(weights)
    with pytest.raises(ValueError, match="does not fit") as e:
        amdim_tf.load_encoder(weights, config=other)
    assert len(_first_line(e)) == 1
    with pytest.raises(ValueError, match="no architecture"):
        amdim_tf.load_encoder(weights)
    checkpoint = checkpoints.checkpoint_path(tiny_run)
    with pytest.raises(ValueError, match="ndf=16") as e:
        amdim_tf.load_encoder(checkpoint, config=other)
    assert len(_first_line(e)) == 1
    # The matching config restores the checkpoint prefix.
    assert amdim_tf.load_encoder(checkpoint, config=tiny_run_config()).encoder.ndf == 8


def test_a_keras_file_of_another_model_is_refused(tmp_path):
    path = str(tmp_path / "dense.keras")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)
    with pytest.raises(ValueError, match="not an encoder"):
        amdim_tf.load_encoder(path)
    assert os.path.exists(path)


def test_damaged_files_and_wrong_images_get_one_line_naming_them(tiny_run, tmp_path):
    """Issue 21, 15: each said "File not found", a raw KeyError, "does not exist",
    "Incompatible shapes" or "Could not automatically infer the output shape"."""
    good = backbone.save_encoder(tiny_run, str(tmp_path / "good.keras"))
    with open(good, "rb") as f:
        data = f.read()
    cases = {
        "empty.keras": (b"", "empty"),
        "garbage.keras": (b"this is not a zip archive" * 10, "not a .keras file"),
        "cut.keras": (data[: len(data) // 2], "not a .keras file"),
    }
    for name, (content, why) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=why) as e:
            amdim_tf.load_encoder(str(path))
        assert len(_first_line(e)) == 1 and str(path) in str(e.value)
    no_config = tmp_path / "no_config.keras"
    with zipfile.ZipFile(no_config, "w") as z:
        z.writestr("metadata.json", "{}")
    with pytest.raises(ValueError, match="without config.json") as e:
        amdim_tf.load_encoder(str(no_config))
    assert len(_first_line(e)) == 1
    legacy = tmp_path / "encoder.h5"
    legacy.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(ValueError, match=r"kind this loader does not read.*\.weights\.h5"):
        amdim_tf.load_encoder(str(legacy))

    enc = amdim_tf.load_encoder(good, include_preprocessing=True)
    for shape, why in (((2, 32, 32, 4), r"\[B, H, W, 3\]"), ((2, 4, 4, 3), "at least 8x8")):
        with pytest.raises(ValueError, match=why) as e:
            enc(np.zeros(shape, np.uint8))
        assert len(_first_line(e)) == 1 and str(list(shape)).replace(" ", "") in str(
            e.value
        ).replace(" ", "")
        with pytest.raises(ValueError, match=why):
            enc(keras.Input(shape[1:], dtype="uint8"))  # a functional model's input
        with pytest.raises(ValueError, match=why):
            backbone.open_encoder(good).features(np.zeros(shape, np.uint8))


def test_untrained_encoder_leaves_the_callers_random_state_alone():
    """An untrained encoder reseeded the global RNGs inside a getter (finetune calls it per
    candidate). Its weights stay those of a seeded build; the caller's RNGs do not move."""
    import random

    import keras
    from conftest import tiny_run_config

    from amdim_tf.methods import build_encoder

    config = tiny_run_config()
    keras.utils.set_random_seed(4)
    want = build_encoder(config)
    want.build((None, config.model.image_size, config.model.image_size, 3))
    keras.utils.set_random_seed(123)
    expected = (random.random(), np.random.rand(), float(tf.random.uniform([])))
    keras.utils.set_random_seed(123)
    got = backbone.untrained_encoder(config, seed=4)
    assert (random.random(), np.random.rand(), float(tf.random.uniform([]))) == expected
    for a, b in zip(want.get_weights(), got.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_pooled_takes_the_pixel_contract_and_unit_views_their_own_name(tiny_run):
    """`features` took 0..255 pixels of any size while `pooled` took [0, 1] views at the
    encoder's size: one object, two contracts. Both now take 0..255 of any size."""
    loaded = backbone.open_encoder(tiny_run)
    big = np.random.default_rng(5).integers(0, 256, (2, 45, 60, 3), dtype=np.uint8)
    views = tf.stack([augment.eval_pixels(tf.constant(im), loaded.preset) for im in big])
    want = loaded.pooled_unit_views(views, ("r1",))["r1"]
    np.testing.assert_allclose(loaded.pooled(big, ("r1",))["r1"], want, atol=1e-5)
    as_float = loaded.pooled(tf.constant(big, tf.float32), ("r1",))["r1"]
    np.testing.assert_allclose(as_float, want, atol=1e-5)
    with pytest.raises(ValueError, match="multiply"):
        loaded.pooled(big / 255.0, ("r1",))  # [0, 1] floats: refused, not guessed
