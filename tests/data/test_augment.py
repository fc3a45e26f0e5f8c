"""Tests for amdim_tf.data.augment: determinism, shapes, ranges and the shared flip."""

import numpy as np
import pytest
import tensorflow as tf

from amdim_tf.data import augment

SIZES = {"cifar": 32, "stl": 64, "imagenet": 128, "stl10": 64}
# Source sizes as the datasets store them (CIFAR 32, STL-10 96, ImageNet larger, odd).
SOURCE_SHAPES = {
    "cifar": (32, 32, 3),
    "stl": (96, 96, 3),
    "imagenet": (150, 170, 3),
    "stl10": (96, 96, 3),
}


def _random_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, size=shape, dtype=np.uint8))


def _ramp_image(shape):
    """Gray, brightening left to right: colour ops keep gray gray and keep the order."""
    h, w, _ = shape
    row = np.linspace(0.1, 0.6, w, dtype=np.float32)
    return tf.constant(np.broadcast_to(row[None, :, None], shape).copy())


def _seed(a, b=0):
    return tf.constant([a, b], tf.int64)


def _brightens_to_the_right(view, preset):
    image = augment.denormalise(view, preset).numpy().mean(axis=(0, 2))
    quarter = len(image) // 4
    left, right = image[:quarter].mean(), image[-quarter:].mean()
    assert abs(left - right) > 0.02, "orientation must be readable from the view"
    return right > left


def test_presets_and_sizes():
    assert augment.PRESETS == ("cifar", "stl", "imagenet", "stl10")
    for preset, size in SIZES.items():
        if preset != "stl10":  # named, never picked by size (see the next test)
            assert augment.preset_for_size(size) == preset
    with pytest.raises(ValueError, match="48"):
        augment.preset_for_size(48)


def test_the_stl10_preset_normalises_with_the_official_stl10_statistics():
    """Issue 20 item 12: the official code's TransformsSTL10 mean/std, not ImageNet's;
    a 64 px run recorded with data.augment='' keeps the ImageNet statistics it trained with."""
    from amdim_tf import presets

    config = presets.load("amdim_stl10:tiny")
    name = augment.preset_for(config.data.augment, config.data.image_size)
    assert name == "stl10"
    grey = tf.fill([64, 64, 3], 0.5)
    want = (0.5 - np.array([0.43, 0.42, 0.39])) / np.array([0.27, 0.26, 0.27])
    np.testing.assert_allclose(augment.eval_view(grey, name).numpy()[0, 0], want, rtol=1e-5)
    old = (0.5 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(
        augment.eval_view(grey, augment.preset_for("", 64)).numpy()[0, 0], old, rtol=1e-5
    )


@pytest.mark.parametrize(
    "fn",
    [
        lambda p: augment.two_views(_random_image((32, 32, 3)), _seed(1), p),
        lambda p: augment.eval_view(_random_image((32, 32, 3)), p),
        lambda p: augment.denormalise(tf.zeros([32, 32, 3]), p),
    ],
)
def test_unknown_preset_names_value_and_choices(fn):
    with pytest.raises(ValueError, match=r"'cifar10'.*'cifar', 'stl', 'imagenet'"):
        fn("cifar10")


@pytest.mark.parametrize("preset", augment.PRESETS)
def test_two_views_eager_equals_dataset_map(preset):
    image = _random_image(SOURCE_SHAPES[preset])
    seed = _seed(7, 3)
    eager = augment.two_views(image, seed, preset)
    ds = tf.data.Dataset.from_tensors(image).map(lambda x: augment.two_views(x, seed, preset))
    mapped = next(iter(ds))
    size = SIZES[preset]
    for a, b in zip(eager, mapped, strict=True):
        assert a.shape == (size, size, 3) and a.dtype == tf.float32
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    # Normalised views stay inside the image of [0, 1] under the preset's mean/std.
    spec = augment._PRESETS[preset]
    lo = (0.0 - np.array(spec.mean)) / np.array(spec.std)
    hi = (1.0 - np.array(spec.mean)) / np.array(spec.std)
    for view in eager:
        v = view.numpy()
        assert np.all(v >= lo - 1e-4) and np.all(v <= hi + 1e-4)
    # The two views of one image are augmented independently.
    assert np.abs(eager[0].numpy() - eager[1].numpy()).mean() > 0.05


@pytest.mark.parametrize("preset", augment.PRESETS)
def test_eval_view_shape_determinism_and_values(preset):
    image = _random_image(SOURCE_SHAPES[preset])
    eager = augment.eval_view(image, preset)
    mapped = next(
        iter(tf.data.Dataset.from_tensors(image).map(lambda x: augment.eval_view(x, preset)))
    )
    size = SIZES[preset]
    assert eager.shape == (size, size, 3) and eager.dtype == tf.float32
    np.testing.assert_allclose(eager.numpy(), mapped.numpy(), atol=1e-6)
    # A flat image stays flat: resize and crop must not shift colours.
    flat = tf.fill(SOURCE_SHAPES[preset], tf.constant(100, tf.uint8))
    spec = augment._PRESETS[preset]
    expected = (100 / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(
        augment.eval_view(flat, preset).numpy(),
        np.broadcast_to(expected, (size, size, 3)),
        atol=1e-4,
    )


def test_eval_view_cifar_is_normalise_only_and_denormalise_inverts_it():
    image = _random_image((32, 32, 3))
    restored = augment.denormalise(augment.eval_view(image, "cifar"), "cifar")
    np.testing.assert_allclose(restored.numpy(), image.numpy() / 255.0, atol=1e-5)


def test_eval_view_stl_resizes_shorter_side_then_centre_crops():
    # A 96x192 image whose left and right thirds are black: after resizing the shorter
    # side to 70 (-> 70x140, white in columns 46.7-93.3) a centre 64 crop (from column
    # 38) has white in its columns 8.7-55.3, away from the bicubic edge blur.
    image = np.zeros((96, 192, 3), np.uint8)
    image[:, 64:128] = 255
    view = augment.denormalise(augment.eval_view(tf.constant(image), "stl"), "stl")
    assert view.shape == (64, 64, 3)
    np.testing.assert_allclose(view.numpy()[:, 11:53], 1.0, atol=1e-3)
    np.testing.assert_allclose(view.numpy()[:, :6], 0.0, atol=1e-3)
    np.testing.assert_allclose(view.numpy()[:, 58:], 0.0, atol=1e-3)


@pytest.mark.parametrize("preset", augment.PRESETS)
def test_views_share_the_flip(preset):
    # Translation, crop and colour jitter keep a gray left-to-right ramp increasing, so
    # each view's orientation is readable; a per-view flip would disagree ~half the time.
    image = _ramp_image(SOURCE_SHAPES[preset])
    orientations = []
    for i in range(12):
        v1, v2 = augment.two_views(image, _seed(i, 11), preset)
        o1, o2 = _brightens_to_the_right(v1, preset), _brightens_to_the_right(v2, preset)
        assert o1 == o2, f"views disagree on the flip for seed {i}"
        orientations.append(o1)
    assert 0 < sum(orientations) < len(orientations), "flip must happen sometimes, not always"


def test_same_seed_reproduces_a_batch_and_different_seeds_differ():
    images = tf.stack([_random_image((32, 32, 3), seed=i) for i in range(4)])

    def batch(base):
        ds = (
            tf.data.Dataset.from_tensor_slices(images)
            .enumerate()
            .map(
                lambda i, x: augment.two_views(
                    x, tf.stack([tf.constant(base, tf.int64), i]), "cifar"
                ),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        )
        return next(iter(ds.batch(4)))

    a, b, c = batch(5), batch(5), batch(6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert np.abs(a[0].numpy() - c[0].numpy()).mean() > 0.05


def test_float_input_matches_uint8_and_odd_sizes_are_resized():
    image = _random_image((32, 32, 3))
    a = augment.two_views(image, _seed(3), "cifar")
    b = augment.two_views(tf.cast(image, tf.float32) / 255.0, _seed(3), "cifar")
    np.testing.assert_allclose(a[0].numpy(), b[0].numpy(), atol=1e-5)
    v1, v2 = augment.two_views(_random_image((5, 7, 3)), _seed(3), "cifar")
    assert v1.shape == v2.shape == (32, 32, 3)
    assert np.all(np.isfinite(v1.numpy()))
    # An int seed is accepted as a convenience; a wrong-shaped key is not.
    augment.two_views(image, 3, "cifar")
    with pytest.raises(ValueError, match="shape"):
        augment.two_views(image, tf.constant([1, 2, 3]), "cifar")


def test_grayscale_rate():
    # Colourful source: a view with R == G == B everywhere came from RandomGrayscale.
    image = _random_image((32, 32, 3), seed=1)
    views = [v for i in range(40) for v in augment.two_views(image, _seed(i, 2), "cifar")]
    gray = [
        np.allclose(*augment.denormalise(v, "cifar").numpy().transpose(2, 0, 1)[:2], atol=1e-5)
        for v in views
    ]
    assert 0.1 < np.mean(gray) < 0.45  # p = 0.25


def test_translation_is_a_reflect_padded_crop():
    # RandomTranslateWithReflect(4): every output is a 32x32 window of the source
    # reflect-padded by 4 (edge pixel not repeated), at any of the 9x9 offsets.
    src = augment._to_float(_random_image((32, 32, 3), seed=4)).numpy()
    padded = np.pad(src, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    windows = np.stack([padded[dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)])
    offsets = set()
    for i in range(30):
        view = augment.translate_with_reflect(tf.constant(src), _seed(i, 5)).numpy()
        err = np.abs(windows - view).max(axis=(1, 2, 3))
        assert err.min() < 1e-6, f"seed {i}: not a reflect-padded window"
        offsets.add(int(err.argmin()))
    assert len(offsets) > 10, "translations should vary with the seed"


def test_color_jitter_keeps_range_and_changes_colours():
    image = augment._to_float(_random_image((32, 32, 3), seed=2))
    out = augment._color_jitter(image, _seed(1), hue=0.2)
    assert out.shape == (32, 32, 3)
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0
    assert float(tf.reduce_mean(tf.abs(out - image))) > 0.01
    # Jitter of a gray image stays gray (saturation and hue are no-ops on it).
    gray = augment._gray(image)
    out = augment._color_jitter(gray, _seed(2), hue=0.2).numpy()
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)
