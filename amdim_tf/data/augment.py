"""Seedable two-view augmentation for AMDIM pretraining, as pure tf.data ops.

AMDIM (Bachman, Hjelm & Buchwalter, "Learning Representations by Maximizing Mutual
Information Across Views", NeurIPS 2019, Sec. 3.1 and App. A) builds its two views of an
image with the torchvision pipelines of the official code, `datasets.py` in
github.com/Philip-Bachman/amdim-public (`TransformsC10`, `TransformsSTL10`,
`TransformsImageNet128`). This module reproduces them with stateless TF ops so that a seed
of shape [2] fixes the result whether the function runs eagerly or inside
`Dataset.map`:

- a horizontal flip (p=0.5) is applied once to the source image, so both views share it
  (the official `__call__` flips before calling the per-view transform twice);
- then, independently per view:
  - "cifar" (32 px): with p=0.8 a translation of up to +-4 px with reflected borders
    (`RandomTranslateWithReflect(4)`, which equals a random 32x32 crop of the image
    reflect-padded by 4 without repeating the edge pixel, i.e. `tf.pad(..., "REFLECT")`);
  - "stl" / "stl10" (64 px) / "imagenet" (128 px): a random resized crop (area 0.3-1.0, aspect ratio
    0.7-1.4, bicubic);
  - with p=0.8 colour jitter (brightness, contrast, saturation 0.4; hue 0.2, or 0.1 for
    ImageNet) with torchvision semantics: factors uniform in [0.6, 1.4], contrast and
    saturation blend towards the grayscale image (not TF's HSV/per-channel variants), hue
    shift uniform in [-h, h] of the colour circle, the four ops applied in a random order
    as `ColorJitter` does;
  - with p=0.25 grayscale, kept as 3 channels (`RandomGrayscale`);
  - normalisation with the official per-dataset mean/std ("stl10": STL-10's own, as
    the official code; "stl": ImageNet's, what this project's 64 px runs used before).
- Evaluation views only normalise ("cifar") or resize the shorter side to 70/146 and
  centre-crop 64/128 ("stl", "stl10" / "imagenet").

Known differences from torchvision: TF samples the crop aspect ratio uniformly rather than
log-uniformly and falls back to the whole image (not a centre crop) after 10 failed
attempts; bicubic resizing uses Keys' kernel with antialiasing, close to but not
bit-identical with PIL.

Inputs are [H, W, 3] uint8 images, or float images already in [0, 1]; an image whose size
differs from the preset's is resized first (only needed for "cifar", where translation
works at the native 32 px).
"""

import dataclasses

import tensorflow as tf

from amdim_tf.data.pixel_scale import to_unit
from amdim_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class _Preset:
    name: str
    size: int
    mean: tuple
    std: tuple
    hue: float
    # Shorter side before the centre crop of the evaluation view; 0 means the image is
    # only resized to `size` (CIFAR is evaluated at its native resolution).
    eval_resize: int


# The official code normalises CIFAR with mean (125.3, 123.0, 113.9)/255 and std
# (63.0, 62.1, 66.7)/255; we keep those exact values so features match the reference
# implementation (they equal the commonly quoted 0.4914/0.2470 ones to 3 decimals).
_CIFAR_MEAN = (125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0)
_CIFAR_STD = (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# The official code's STL-10 statistics (TransformsSTL10 in its datasets.py).
_STL10_MEAN = (0.43, 0.42, 0.39)
_STL10_STD = (0.27, 0.26, 0.27)

_PRESETS = {
    "cifar": _Preset("cifar", 32, _CIFAR_MEAN, _CIFAR_STD, hue=0.2, eval_resize=0),
    # "stl" normalises with ImageNet's statistics, as every 64 px run of this project
    # did before "stl10" existed; it stays the preset of a 64 px run whose data.augment
    # is '' so that those runs evaluate as they trained. New STL-10 runs name "stl10"
    # (the amdim_stl10 preset does): the same views, the official STL-10 statistics.
    "stl": _Preset("stl", 64, _IMAGENET_MEAN, _IMAGENET_STD, hue=0.2, eval_resize=70),
    "imagenet": _Preset("imagenet", 128, _IMAGENET_MEAN, _IMAGENET_STD, hue=0.1, eval_resize=146),
    "stl10": _Preset("stl10", 64, _STL10_MEAN, _STL10_STD, hue=0.2, eval_resize=70),
}
PRESETS = tuple(_PRESETS)
# The preset data.augment='' picks for each image size (the first of that size above).
_BY_SIZE: dict[int, str] = {}
for _name, _spec in _PRESETS.items():
    _BY_SIZE.setdefault(_spec.size, _name)

_FLIP_P = 0.5
TRANSLATE_P = 0.8
MAX_TRANSLATION = 4
_JITTER_P = 0.8
_JITTER_STRENGTH = 0.4  # brightness, contrast and saturation factors in [0.6, 1.4]
_GRAY_P = 0.25
_CROP_AREA = (0.3, 1.0)
_CROP_RATIO = (0.7, 1.4)
_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before falling back


def _get_preset(preset):
    if preset not in _PRESETS:
        raise UserError(
            f"Unknown augmentation preset {preset!r}; expected one of {PRESETS} "
            "(set data.augment, or leave it '' to pick one from data.image_size)."
        )
    return _PRESETS[preset]


def preset_for_size(image_size):
    """Returns the preset whose output size is `image_size` (32, 64 or 128)."""
    if image_size in _BY_SIZE:
        return _BY_SIZE[image_size]
    sizes = sorted(_BY_SIZE)
    raise UserError(
        f"No augmentation preset produces {image_size!r}-pixel images; data.image_size "
        f"must be one of {sizes} (AMDIM's CIFAR, STL-10 and ImageNet-128 settings)."
    )


def preset_for(preset: str, image_size: int) -> str:
    """The preset a run uses: `preset` (data.augment) if set, else the one for image_size.

    The one home of this rule (training, evaluation, loading, export and the figures
    all call it); a known preset whose views are not `image_size` pixels is an error (an
    unknown name is left to the caller's own check, which lists the presets).
    """
    image_size = int(image_size)
    name = preset or preset_for_size(image_size)
    if name in _PRESETS and _PRESETS[name].size != image_size:
        raise UserError(
            f"data.augment={name!r} produces {preset_size(name)}-pixel views but "
            f"data.image_size={image_size}; set data.augment='' to pick the preset for the "
            "image size, or make the two agree."
        )
    return name


def preset_size(preset):
    """Returns the output side length of `preset`."""
    return _get_preset(preset).size


def _as_seed(seed):
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        # Accept a plain integer for convenience; stateless ops need a [2] key.
        seed = tf.stack([tf.zeros_like(seed), seed])
    if seed.shape.as_list() != [2]:
        raise ValueError(
            f"Augmentation seed must have shape [2] (a stateless RNG key), got shape "
            f"{seed.shape}; derive one with tf.random.experimental.stateless_fold_in."
        )
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    return seed


def _to_float(image):
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        return to_unit(image)
    return tf.cast(image, tf.float32)


def _resize_to(image, size):
    """Resizes a float image [H, W, 3] (or a batch [B, H, W, 3]) to size x size unless it
    already is that size."""
    if image.shape[-3] == size and image.shape[-2] == size:
        return image
    shape = tf.shape(image)

    def resize():
        out = tf.image.resize(image, [size, size], method="bicubic", antialias=True)
        return tf.clip_by_value(out, 0.0, 1.0)

    out = tf.cond(
        tf.logical_and(tf.equal(shape[-3], size), tf.equal(shape[-2], size)),
        lambda: image,
        resize,
    )
    return tf.ensure_shape(out, [*image.shape[:-3], size, size, 3])


def _normalise(image, spec):
    return (image - tf.constant(spec.mean, tf.float32)) / tf.constant(spec.std, tf.float32)


def normalise(image, preset):
    """Float pixels in [0, 1] -> the network's input scale for `preset` (the one
    normalisation shared by training, evaluation and the exported SavedModel)."""
    return _normalise(tf.cast(image, tf.float32), _get_preset(preset))


def _gray(image):
    # Keeps 3 channels, as torchvision's RandomGrayscale does.
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def translate_with_reflect(image, seed):
    """A random translation of up to MAX_TRANSLATION px with reflected borders (the
    official `RandomTranslateWithReflect`), seeded by [2] ints."""
    m = MAX_TRANSLATION
    padded = tf.pad(image, [[m, m], [m, m], [0, 0]], mode="REFLECT")
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)


def _random_resized_crop(image, seed, size):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=_CROP_RATIO,
        area_range=_CROP_AREA,
        max_attempts=_CROP_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    out = tf.image.resize(crop, [size, size], method="bicubic", antialias=True)
    # Bicubic overshoots at edges; torchvision's PIL path clips to the pixel range too.
    return tf.clip_by_value(out, 0.0, 1.0)


def _color_jitter(image, seed, hue):
    """torchvision ColorJitter(0.4, 0.4, 0.4, hue) on a float [0, 1] image."""
    order_seed, factor_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    s = _JITTER_STRENGTH
    factors = tf.random.stateless_uniform([3], factor_seed, minval=1.0 - s, maxval=1.0 + s)
    hue_shift = tf.random.stateless_uniform(
        [],
        tf.random.experimental.stateless_fold_in(factor_seed, 1),
        minval=-hue,
        maxval=hue,
    )
    # torchvision applies the four ops in a fresh random order for every image.
    order = tf.argsort(tf.random.stateless_uniform([4], order_seed))

    def brightness(x):
        return tf.clip_by_value(x * factors[0], 0.0, 1.0)

    def contrast(x):
        # Blend towards the mean *gray* level (torchvision), not the per-channel mean
        # that tf.image.adjust_contrast uses.
        mean = tf.reduce_mean(tf.image.rgb_to_grayscale(x))
        return tf.clip_by_value(mean + factors[1] * (x - mean), 0.0, 1.0)

    def saturation(x):
        # Blend towards the per-pixel gray image (torchvision), not an HSV scaling.
        gray = tf.image.rgb_to_grayscale(x)
        return tf.clip_by_value(gray + factors[2] * (x - gray), 0.0, 1.0)

    def hue_op(x):
        return tf.clip_by_value(tf.image.adjust_hue(x, hue_shift), 0.0, 1.0)

    ops = [brightness, contrast, saturation, hue_op]
    for slot in range(4):
        image = tf.switch_case(order[slot], [lambda op=op, x=image: op(x) for op in ops])
        image = tf.ensure_shape(image, [None, None, 3])
    return image


def _apply_with_p(p, u, fn, image):
    return tf.cond(u < p, lambda: fn(image), lambda: image)


def _augment_view(image, seed, spec):
    """One view from an already flipped float image in [0, 1]."""
    gate_seed, geo_seed, jitter_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    gates = tf.random.stateless_uniform([3], gate_seed)
    if spec.eval_resize == 0:
        image = _resize_to(image, spec.size)
        image = _apply_with_p(
            TRANSLATE_P, gates[0], lambda x: translate_with_reflect(x, geo_seed), image
        )
    else:
        image = _random_resized_crop(image, geo_seed, spec.size)
    image = _apply_with_p(
        _JITTER_P, gates[1], lambda x: _color_jitter(x, jitter_seed, spec.hue), image
    )
    image = _apply_with_p(_GRAY_P, gates[2], _gray, image)
    image = tf.ensure_shape(image, [spec.size, spec.size, 3])
    return _normalise(image, spec)


def two_views(image, seed, preset):
    """Two independently augmented views of one image, sharing a horizontal flip.

    Args:
      image: [H, W, 3] uint8, or float in [0, 1].
      seed: int32/int64 tensor of shape [2]; the same seed gives the same views eagerly
        and inside `tf.data.Dataset.map`.
      preset: one of `PRESETS`.

    Returns:
      (view1, view2), each float32 [S, S, 3], normalised with the preset's mean/std.
    """
    spec = _get_preset(preset)
    seed = _as_seed(seed)
    flip_seed, seed1, seed2 = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    image = _to_float(image)
    # Flipped once on the source so both views agree on orientation, as in the official
    # TransformsC10/STL10/ImageNet128.__call__.
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return _augment_view(image, seed1, spec), _augment_view(image, seed2, spec)


def _center_crop(image, size):
    shape = tf.shape(image)
    # torchvision rounds the offset with Python's round (half to even); tf.round agrees.
    top = tf.cast(tf.round(tf.cast(shape[-3] - size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[-2] - size, tf.float32) / 2.0), tf.int32)
    return image[..., top : top + size, left : left + size, :]


def _resize_shorter_side(image, target):
    shape = tf.cast(tf.shape(image)[-3:-1], tf.float32)
    scale = tf.cast(target, tf.float32) / tf.reduce_min(shape)
    # torchvision truncates the longer side (int(target * long / short)).
    new_hw = tf.maximum(tf.cast(tf.floor(shape * scale + 1e-4), tf.int32), target)
    out = tf.image.resize(image, new_hw, method="bicubic", antialias=True)
    return tf.clip_by_value(out, 0.0, 1.0)


def eval_view(image, preset):
    """The deterministic evaluation view: float32 [S, S, 3], normalised.

    Also takes a batch [B, H, W, 3] of images of one size (-> [B, S, S, 3]): the same
    ops on each image, as the exported models and `PixelEncoder` apply it.
    """
    spec = _get_preset(preset)
    image = _to_float(image)
    if spec.eval_resize == 0:
        image = _resize_to(image, spec.size)
    else:
        image = _center_crop(_resize_shorter_side(image, spec.eval_resize), spec.size)
    image = tf.ensure_shape(image, [*image.shape[:-3], spec.size, spec.size, 3])
    return _normalise(image, spec)


def eval_pixels(image, preset):
    """The evaluation view as pixels in [0, 1]: the image as the encoder is evaluated on
    it (resized / centre-cropped), for sprites, grids and figures."""
    return denormalise(eval_view(image, preset), preset)


def denormalise(view, preset):
    """Inverts the normalisation of a view to float in [0, 1], e.g. for tf.summary."""
    spec = _get_preset(preset)
    view = tf.convert_to_tensor(view, tf.float32)
    image = view * tf.constant(spec.std, tf.float32) + tf.constant(spec.mean, tf.float32)
    return tf.clip_by_value(image, 0.0, 1.0)
