"""The classifier of the few-label protocol: build it on an encoder, train it with
held-out selection, hand it out with the pixel contract (`.keras` and SavedModel).

A classifier is the encoder's r1 with one linear head (`build_classifier`): normalised
eval views [B, S, S, 3] -> logits [B, K]. `train_classifier` trains it in place with two
Adam optimizers (the head's and the encoder's learning rates, each with its own cosine
decay), BatchNorm frozen or trained, light geometric augmentation only, and, given a
held-out split, ends at its best held-out step. Why each choice: the recipe in
`amdim_tf/use/finetune.py`. `pixel_classifier` and `export_classifier` wrap a trained
classifier for users: 0..255 pixels of any size in, probabilities and class names out.
"""

import math
import time

import keras
import numpy as np
import tensorflow as tf

from amdim_tf import compat
from amdim_tf.data import augment
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run.pixels import (
    PixelClassifier,
    assert_pixels_shape,
    class_outputs,
    min_image_side,
    unless_empty,
    views,
)
from amdim_tf.use import export

CLASSIFIER_JSON = "classifier.json"
BN_MODES = ("frozen", "train")


def build_classifier(encoder, num_classes, seed=0):
    """images [B, S, S, 3] (normalised) -> logits [B, K]: the encoder's r1 + a linear head."""
    size = encoder.image_size
    keras.utils.set_random_seed(seed)
    images = keras.Input((size, size, 3), name="images")
    r1 = encoder(images)[GLOBAL]  # [B, 1, 1, D]
    flat = keras.layers.Flatten(name="r1_flat")(r1)  # [B, D]
    logits = keras.layers.Dense(num_classes, name="head")(flat)  # [B, K]
    return keras.Model(images, logits, name="classifier")


def set_head(model, kernel, bias) -> None:
    """Starts the classifier's head from a linear probe (`evaluate.linear_weights`)."""
    model.get_layer("head").set_weights([kernel, bias])


def freeze_batch_norm(encoder) -> int:
    """Puts every BatchNorm of `encoder` in inference mode (Keras 3: trainable=False)."""
    n = 0
    for layer in compat.nested_layers(encoder):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            n += 1
    return n


def light_augment(view, seed):
    """A normalised eval view [S, S, 3] -> a flipped / translated view, seeded by [2] ints.

    The geometric part of augment's "cifar" preset (flip p=0.5; p=0.8 a reflected
    translation of up to 4 px), applied after normalisation: both commute with the
    per-channel normalisation, so the eval pipeline can be reused as is.
    """
    seed = tf.convert_to_tensor(seed, tf.int64)
    flip_seed, gate_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    view = tf.image.stateless_random_flip_left_right(view, flip_seed)
    gate = tf.random.stateless_uniform([], gate_seed)
    return tf.cond(
        gate < augment.TRANSLATE_P,
        lambda: augment.translate_with_reflect(view, crop_seed),
        lambda: view,
    )


def _train_dataset(x, y, batch, steps, seed):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).repeat().enumerate()
    key = tf.constant([seed, 0], tf.int64)

    def view(position, example):
        image, label = example
        # One seed per draw: an image seen in several epochs moves differently each time.
        return light_augment(image, key + tf.stack([0, position])), label

    ds = ds.map(view, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True).take(steps)
    return ds.prefetch(tf.data.AUTOTUNE)


def _optimizer(lr, steps):
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps))


def logits_fn(model):
    """model (normalised views -> logits), traced once, BatchNorm in inference mode."""
    size = model.input_shape[1]

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    def logits(images):
        return model(images, training=False)

    return logits


def accuracy(model, x, y, batch=500, logits=None) -> float:
    """Top-1 accuracy of `model` (BatchNorm in inference mode) on in-memory (x, y);
    `logits`: its `logits_fn`, when the caller scores the same model several times."""
    logits = logits or logits_fn(model)
    correct = 0
    for i in range(0, len(x), batch):
        pred = np.argmax(logits(tf.constant(x[i : i + batch])).numpy(), axis=1)
        correct += int(np.sum(pred == y[i : i + batch]))
    return correct / len(x)


def _optimizers(model, encoder, x, y, loss_fn, backbone_lr, head_lr, steps) -> list:
    """[(optimizer, variables)]: the encoder's and the head's, each at its own rate; a
    group at rate 0 gets none (it does not move)."""
    encoder_ids = {id(v) for v in encoder.trainable_variables}
    # Variables that get a gradient: r5/r7 critic heads do not feed the classifier.
    probe = x[: min(2, len(x))]
    with tf.GradientTape() as tape:
        loss = loss_fn(y[: len(probe)], model(probe, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    used = [v for v, g in zip(model.trainable_variables, grads, strict=True) if g is not None]
    backbone = [v for v in used if id(v) in encoder_ids]
    head = [v for v in used if id(v) not in encoder_ids]
    optimizers = []
    for variables, lr in ((backbone, backbone_lr), (head, head_lr)):
        if variables and lr > 0:
            opt = _optimizer(lr, steps)
            opt.build(variables)
            optimizers.append((opt, variables))
    return optimizers


def _train_step(model, optimizers, loss_fn):
    """The traced step (images, labels) -> loss of `model` under `optimizers`."""
    train_vars = [v for _, vs in optimizers for v in vs]
    size = model.input_shape[1]
    spec = [tf.TensorSpec([None, size, size, 3], tf.float32), tf.TensorSpec([None], tf.int64)]

    @tf.function(input_signature=spec)
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, train_vars)
        i = 0
        for opt, variables in optimizers:
            opt.apply_gradients(zip(grads[i : i + len(variables)], variables, strict=True))
            i += len(variables)
        return loss

    return step


class _BestStep:
    """Held-out checks of a model during training; keeps the weights of the best step
    (the earliest of equals)."""

    def __init__(self, model, held_out):
        self.model, self.held_out = model, held_out
        self.score = logits_fn(model)
        self.curve, self.best = [], None

    def check(self, n) -> None:
        acc = accuracy(self.model, *self.held_out, logits=self.score)
        self.curve.append([n, acc])
        if self.best is None or acc > self.best[1]:  # strict: the earliest step wins ties
            self.best = (n, acc, [v.numpy() for v in self.model.variables])

    def restore(self) -> dict:
        for v, value in zip(self.model.variables, self.best[2], strict=True):
            v.assign(value)
        return {"best_step": self.best[0], "val_acc": self.best[1], "curve": self.curve}


def train_classifier(model, encoder, x, y, recipe, seed, backbone_lr, bn, held_out=None) -> dict:
    """Trains `model` (built by build_classifier around `encoder`) on (x, y) in place.

    recipe: a `finetune.Recipe` (its steps(n), batch_size, head_lr and evals);
    backbone_lr: the encoder's learning rate (0 = a frozen encoder; the head's is
    recipe.head_lr); bn: "frozen" or "train". With held_out=(x_val, y_val), the model is
    scored on it at step 0 and `recipe.evals` times during training, and ends with the
    weights of its best step (the earliest of equals).

    Returns {"steps", "loss", "seconds"} and, with held_out, "best_step", "val_acc"
    (at the best step) and "curve" [[step, val_acc], ...].
    """
    if bn == "frozen":
        freeze_batch_norm(encoder)
    steps = recipe.steps(len(x))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizers = _optimizers(model, encoder, x, y, loss_fn, backbone_lr, recipe.head_lr, steps)
    step = _train_step(model, optimizers, loss_fn)
    tracker = None
    if held_out is not None:
        every = max(1, steps // recipe.evals)
        tracker = _BestStep(model, held_out)
        tracker.check(0)
    start, losses = time.perf_counter(), []
    for n, (images, labels) in enumerate(_train_dataset(x, y, recipe.batch_size, steps, seed)):
        loss = float(step(images, labels))
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite fine-tuning loss {loss} at step {n}.")
        losses.append(loss)
        if tracker is not None and ((n + 1) % every == 0 or n + 1 == steps):
            tracker.check(n + 1)
    info = {"steps": steps, "loss": float(np.mean(losses[-10:])), "seconds": 0.0}
    if tracker is not None:
        info.update(tracker.restore())
    info["seconds"] = time.perf_counter() - start
    return info


def pixel_classifier(model, names, preset) -> PixelClassifier:
    """`model` (normalised views -> logits, `build_classifier`) with the pixel contract:
    pixels 0..255 of any size in, probabilities out, `class_names` naming the columns."""
    size = model.input_shape[1]
    classifier = PixelClassifier(model, preset, names, name="pixel_classifier")
    classifier.build((None, size, size, 3))
    return classifier


def export_classifier(classifier: PixelClassifier, export_dir: str) -> str:
    """Writes `classifier` as a SavedModel whose `classify` (also `serving_default`)
    signature maps

    images uint8 [B, H, W, 3], 0..255, any size -> class_name string [B] (the predicted
                                                   class), class_index int32 [B],
                                                   probabilities float32 [B, K]

    with the pixel contract of `run/pixels.py` inside the graph (the evaluation view and
    the preset's normalisation) and BatchNorm in inference mode; the K names, in column
    order, are in classifier.json beside it. Staged and renamed into place.
    """
    output = export.saved_model_output(export_dir, CLASSIFIER_JSON, "a classifier export")
    archive, info = classifier_archive(classifier)
    return export.write_saved_model(archive, output, info)


def classifier_archive(classifier: PixelClassifier):
    """(the ExportArchive of `export_classifier`, its classifier.json)."""
    size = classifier.image_size
    num_classes = len(classifier.class_names)

    def classify(images):
        images = assert_pixels_shape(images, size, "classify")
        pixels = views(images, classifier.preset, size, "classify")

        def predict():
            logits = classifier.classifier(pixels, training=False)  # [B, K]
            return tf.nn.softmax(tf.cast(logits, tf.float32))  # [B, K]

        probs = unless_empty(pixels, predict, lambda: tf.zeros([0, num_classes], tf.float32))
        return class_outputs(probs, classifier.class_names)

    # The uint8 trace first: it is the signature TF Serving runs. The float traces are for
    # the restored Python function (`loaded.classify(x)`), which cast a float array to
    # uint8 in silence when uint8 was its only trace ([0, 1] images: all 0, one class);
    # with them a float batch follows the pixel contract (0..255, [0, 1] refused).
    endpoint = tf.function(classify, autograph=False)
    for dtype in (tf.uint8, tf.float32, tf.float64):
        endpoint.get_concrete_function(tf.TensorSpec([None, None, None, 3], dtype, name="images"))
    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint("classify", endpoint)
    archive.add_endpoint("serving_default", endpoint)
    info = {
        "class_names": list(classifier.class_names),
        "image_size": size,
        "min_image_side": min_image_side(size),
        "preset": classifier.preset,
        "signatures": {
            "classify": "uint8 [B,H,W,3] 0..255, any size -> class_name [B], class_index "
            "[B], probabilities [B,K]"
        },
    }
    return archive, info
