"""The one pixel contract of every model a user holds, and the Keras models that carry it.

Every artifact a user can hold takes images the way the Keras ecosystem passes them
(`keras.utils.image_dataset_from_directory`, `keras.applications`): pixel values in
0..255, uint8 or float (any integer or float dtype), [B, H, W, 3] of any size. Inside,
a batch of another size than the encoder's S px gets the evaluation view of the
encoder's preset (`augment.eval_view`: CIFAR resized to 32 px, STL / ImageNet shorter
side resized to 70 / 146 and centre-cropped to 64 / 128, bicubic), so the features equal
those evaluation computes from the same image; a batch of S px is taken as that view
itself (as the SavedModel and the LiteRT / ONNX files always took it). Then the training
normalisation. This module is that one rule (`views`) and:

    PixelEncoder     `load_encoder(..., include_preprocessing=True)`, the `.keras`
                     encoder (`save_encoder`): images -> {"r1": [B, D]} (+ local maps
                     on request)
    PixelClassifier  the fine-tuned classifier's `.keras` file (use/finetune.py):
                     images -> probabilities [B, K], `class_names` naming the columns

The SavedModels (`use/export.py`'s `serving_default`, the classifier's `classify`) run
the same `views` in their graphs.

Never guessed: a float batch is read as 0..255, never as [0, 1] because of its dtype or
values. A float batch whose values all lie in (0, 1] (the [0, 1] convention of
`tf.image.convert_image_dtype`) is refused with a one-line error instead of giving
silently wrong features. The [0, 1] form exists only where it is named: the
SavedModel's `serve_float` signature and `Loaded.pooled` (embed's internal path), both
taking the evaluation view itself (`augment.eval_pixels`, exactly S px).

Too small: an image whose shorter side is below `min_image_side` (a quarter of the
encoder's side, 8 px for a 32 px encoder) is a one-line error naming the minimum. A
quarter is the largest upscaling this project trains with (scikit-learn's 8 px digits
read as 32 px); below it the view is mostly interpolation.
"""

import keras
import tensorflow as tf

from amdim_tf.data import augment
from amdim_tf.data.pixel_scale import to_unit
from amdim_tf.errors import UserError
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run.features import check_feature_keys


def min_image_side(image_size: int) -> int:
    """The shortest image side (px) an encoder of `image_size` px takes (see module doc)."""
    return max(1, int(image_size) // 4)


def _shown(shape):
    return "[" + ", ".join("B" if d is None else str(int(d)) for d in shape) + "]"


def check_pixels_shape(shape, image_size: int, what: str) -> None:
    """One-line ValueError unless a batch of `shape` is [B, H, W, 3] with H, W at least
    `min_image_side(image_size)` (dims that are None pass: checked in the graph)."""
    shape = tuple(shape)
    least = min_image_side(image_size)
    if len(shape) != 4 or shape[3] not in (None, 3):
        raise UserError(
            f"{what} takes a batch of RGB images [B, H, W, 3] (pixels 0..255), received "
            f"{_shown(shape)}; add the batch axis and drop an alpha channel (or convert "
            "grey to RGB) first."
        )
    small = [d for d in shape[1:3] if d is not None and d < least]
    if small:
        raise UserError(
            f"{what} takes images of at least {least}x{least} px (its side "
            f"{image_size} px / 4), received {_shown(shape)}; use larger images."
        )


def assert_pixels_shape(images, image_size: int, what: str):
    """`images` with the check of `check_pixels_shape` run in the graph, for shapes only
    known at run time (a SavedModel's concrete signatures, which TF Serving runs)."""
    least = min_image_side(image_size)
    shape = tf.shape(images)
    # Padded, so that a wrong rank fails this check instead of a slice of the shape.
    dims = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[1:4]
    ok = tf.logical_and(tf.equal(tf.size(shape), 4), tf.equal(dims[2], 3))
    ok = tf.logical_and(ok, tf.reduce_all(dims[:2] >= least))
    check = tf.debugging.Assert(
        ok,
        [
            f"{what} takes a batch of RGB images [B, H, W, 3] with H, W >= {least} px "
            "(pixels 0..255); received shape",
            shape,
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _refuse_unit_floats(images, what):
    """Refuses a float batch whose values all lie in (0, 1]: [0, 1] pixels read as
    0..255 would give wrong features without a word."""
    top = tf.reduce_max(images)
    message = (
        f"{what} takes pixels in 0..255 (as keras.utils.image_dataset_from_directory "
        "gives them), but every value of this float batch lies in (0, 1]: multiply "
        "[0, 1] images by 255 first"
    )
    unit = tf.logical_and(top > 0.0, top <= 1.0)
    if isinstance(images, tf.Tensor) and hasattr(images, "numpy"):  # eager: a plain error
        if bool(unit):
            raise UserError(f"{message}; largest value {float(top):.4g}.")
        return images
    check = tf.debugging.Assert(tf.logical_not(unit), [message + "; largest value", top])
    with tf.control_dependencies([check]):
        return tf.identity(images)


def check_pixels(images, image_size: int, what: str) -> None:
    """The checks of `views` on concrete images, as one-line ValueErrors: the models run
    them before Keras's `__call__`, which would wrap them in a many-line report."""
    shape = getattr(images, "shape", None)
    if shape is None:
        return
    check_pixels_shape(shape, image_size, what)
    if isinstance(images, keras.KerasTensor) or not tf.executing_eagerly():
        return
    if isinstance(images, tf.Tensor) and not hasattr(images, "numpy"):
        return
    images = tf.convert_to_tensor(images)
    if images.dtype.is_floating:
        _refuse_unit_floats(images, what)


def views(images, preset: str, image_size: int, what: str = "the encoder"):
    """Images [B, H, W, 3], 0..255 (uint8 or float), any size -> the normalised
    evaluation views float32 [B, S, S, 3] that the encoder takes (`augment.eval_view`).

    The one rule of the pixel contract; see the module docstring."""
    images = tf.convert_to_tensor(images)
    check_pixels_shape(images.shape, image_size, what)
    if not (images.dtype.is_integer or images.dtype.is_floating):
        raise UserError(
            f"{what} takes pixels 0..255 as uint8 or float, received dtype "
            f"{images.dtype.name}; cast the images first."
        )
    if None in images.shape[1:3]:
        images = assert_pixels_shape(images, image_size, what)
    if images.dtype.is_floating:
        images = _refuse_unit_floats(images, what)
    pixels = to_unit(images)  # [B, H, W, 3] in [0, 1]
    size = int(image_size)
    height, width = pixels.shape[1], pixels.shape[2]
    if height == size and width == size:
        return augment.normalise(pixels, preset)  # already the view: [B, S, S, 3]
    if height is not None and width is not None:
        return augment.eval_view(pixels, preset)  # [B, S, S, 3]
    shape = tf.shape(pixels)
    out = tf.cond(
        tf.logical_and(tf.equal(shape[1], size), tf.equal(shape[2], size)),
        lambda: augment.normalise(pixels, preset),
        lambda: augment.eval_view(pixels, preset),
    )
    return tf.ensure_shape(out, [None, size, size, 3])


def unless_empty(images, compute, empty):
    """`compute()` for a batch of images, `empty()` (outputs of 0 rows) for a batch of
    none: the convolutions fail on an empty batch (oneDNN, TF 2.21), where a client
    (TF Serving, a loop over chunks) expects 0 rows back. The batch size is read
    statically when known, else in the graph."""
    count = images.shape[0]
    if count is not None:
        return compute() if count > 0 else empty()
    return tf.cond(tf.shape(images)[0] > 0, compute, empty)


def _unused_by(encoder, keys) -> tuple:
    """Paths of the encoder's trainable variables that none of `keys` depends on (AMDIM's
    r5 / r7 critic heads when only r1 is read), found by a gradient on one blank image."""
    size = encoder.image_size
    candidates = list(encoder.trainable_variables)
    # The loader and keras.saving.load_model build eagerly; a model first built inside a
    # traced function (tf.init_scope would pause the tape) keeps every variable trainable.
    if not candidates or not tf.executing_eagerly():
        return ()
    with tf.GradientTape() as tape:
        out = encoder(tf.zeros([1, size, size, 3]), training=False)
        total = tf.add_n([tf.reduce_sum(tf.cast(out[k], tf.float32)) for k in keys])
    grads = tape.gradient(total, candidates)
    return tuple(v.path for v, g in zip(candidates, grads, strict=True) if g is None)


@keras.saving.register_keras_serializable(package="amdim_tf")
class PixelEncoder(keras.Model):
    """An encoder with the pixel contract: raw images in, the features a classifier reads out.

    Args:
        encoder: one of this project's encoders (a dict with "r1" out, `image_size` set).
        preset: normalisation preset ("cifar", "stl", "imagenet"); default: the one
            training uses for `encoder.image_size` (`augment.preset_for`).
        features: the outputs to expose: "r1" (always), and local maps such as "r5" /
            "r7" on request. The encoder's trainable variables that none of them uses
            (AMDIM's r5 / r7 critic heads for "r1" alone) are frozen, so fitting a
            classifier on r1 trains only what it reads.

    Call: images [B, H, W, 3], pixels 0..255 (uint8 or float), any size of at least
        `min_image_side` (module docstring) -> {"r1": float [B, D], "r5": [B, 5, 5, D],
        ...} for the requested features; r1 is the global feature, flattened.
    """

    def __init__(self, encoder, preset=None, features=(GLOBAL,), **kwargs):
        super().__init__(**kwargs)
        preset = augment.preset_for(preset, encoder.image_size)
        if preset not in augment.PRESETS:
            raise UserError(f"Unknown preset {preset!r}; expected one of {augment.PRESETS}.")
        features = tuple(features)
        if GLOBAL not in features:
            features = (GLOBAL, *features)
        check_feature_keys(features, tuple(encoder.feature_shapes), type(encoder).__name__)
        self.encoder = encoder
        self.preset = preset
        self.features = features
        self.image_size = encoder.image_size
        self.n_rkhs = encoder.n_rkhs
        self._unused = ()
        if encoder.built:
            self._freeze_unused()

    def _freeze_unused(self):
        self._unused = _unused_by(self.encoder, self.features)
        self._refreeze()

    def _refreeze(self):
        unused = set(getattr(self, "_unused", ()))
        if unused and getattr(self, "encoder", None) is not None:
            for v in self.encoder.weights:
                if v.path in unused:
                    v.trainable = False

    @property
    def trainable(self):
        return keras.Model.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        # Keras sets every variable's flag; the unused ones stay frozen.
        keras.Model.trainable.fset(self, value)
        self._refreeze()

    def build(self, input_shape):
        check_pixels_shape(input_shape, self.image_size, type(self.encoder).__name__)
        if not self.encoder.built:
            size = self.image_size
            self.encoder.build((None, size, size, 3))
            self._freeze_unused()

    def __call__(self, images, *args, **kwargs):
        # Checked before Keras's own __call__, which would bury a wrong channel count
        # under "Incompatible shapes" from deep in the convolutions.
        check_pixels(images, self.image_size, type(self.encoder).__name__)
        return super().__call__(images, *args, **kwargs)

    def call(self, images, training=None):
        what = type(self.encoder).__name__
        pixels = views(images, self.preset, self.image_size, what)
        shapes = self.encoder.feature_shapes
        width = shapes[GLOBAL][-1]

        def encode():
            out = self.encoder(pixels, training=training)
            result = {k: out[k] for k in self.features}
            result[GLOBAL] = tf.reshape(out[GLOBAL], [-1, width])  # [B, 1, 1, D] -> [B, D]
            return result

        def empty():  # 0 rows, as the SavedModel's serving_default returns
            dtype = self.encoder.compute_dtype  # the encoder's outputs are not cast
            result = {k: tf.zeros([0, *shapes[k]], dtype) for k in self.features}
            result[GLOBAL] = tf.zeros([0, width], dtype)
            return result

        return unless_empty(pixels, encode, empty)

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            preset=self.preset,
            features=list(self.features),
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def class_outputs(probs, class_names) -> dict:
    """The outputs of a classifier's `classify` (in Python and in the exported signature):
    {"class_name": string [B], "class_index": int32 [B], "probabilities": [B, K]} for
    `probs` [B, K], columns in the order of `class_names`."""
    index = tf.argmax(probs, axis=-1, output_type=tf.int32)  # [B]
    names = tf.gather(tf.constant(list(class_names)), index)  # [B]
    return {"class_name": names, "class_index": index, "probabilities": probs}


@keras.saving.register_keras_serializable(package="amdim_tf")
class PixelClassifier(keras.Model):
    """A classifier with the pixel contract: raw images in, class probabilities out.

    Args:
        classifier: a keras.Model taking normalised views [B, S, S, 3] to logits [B, K]
            (`use/finetune.build_classifier`).
        preset: the normalisation preset of its encoder.
        class_names: the K class names, in column order.

    Call: images [B, H, W, 3], pixels 0..255 (uint8 or float), any size (as
        `PixelEncoder`) -> probabilities float32 [B, K]. `classify(images)` adds the
        predicted class name of each image.
    """

    def __init__(self, classifier, preset, class_names, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.preset = augment.preset_for(preset, classifier.input_shape[1])
        self.image_size = int(classifier.input_shape[1])
        self.class_names = tuple(str(n) for n in class_names)
        k = int(classifier.output_shape[-1])
        if len(self.class_names) != k:
            raise UserError(
                f"class_names has {len(self.class_names)} names but the classifier has {k} "
                "outputs; pass one name per class, in label order."
            )

    def build(self, input_shape):
        check_pixels_shape(input_shape, self.image_size, "the classifier")

    def __call__(self, images, *args, **kwargs):
        check_pixels(images, self.image_size, "the classifier")
        return super().__call__(images, *args, **kwargs)

    def call(self, images, training=None):
        pixels = views(images, self.preset, self.image_size, "the classifier")

        def probabilities():
            logits = self.classifier(pixels, training=training)
            return tf.nn.softmax(tf.cast(logits, tf.float32))  # [B, K]

        return unless_empty(
            pixels, probabilities, lambda: tf.zeros([0, len(self.class_names)], tf.float32)
        )

    def classify(self, images) -> dict:
        """{"class_name": str [B], "class_index": int [B], "probabilities": [B, K]}
        (inference), the outputs of the exported `classify` signature."""
        return class_outputs(self(images, training=False), self.class_names)

    def get_config(self):
        config = super().get_config()
        config.update(
            classifier=keras.saving.serialize_keras_object(self.classifier),
            preset=self.preset,
            class_names=list(self.class_names),
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
