"""Few-label evaluation of a pretrained encoder: frozen probe, fine-tuning, and scratch.

The semi-supervised protocol of the SSL literature (CPC v2, Hénaff et al. 2020, Sec. 4.2;
SimCLR, Chen et al. 2020, Sec. 4.2): draw a class-balanced, seeded subset of the labelled
train split (1% of CIFAR-10 = 500 images, 50 per class), and at those same labels compare

- "frozen": the frozen encoder's r1 features + logistic regression, exactly the protocol of
  `amdim_tf.use.evaluate` (eval views, BatchNorm in inference mode);
- "finetune": the pretrained encoder with a new linear head on r1, trained end to end;
- "scratch": the same network from a random initialisation, trained on the same labels.

Every arm is scored on the whole eval split. The fine-tuning recipe (`Recipe`) is built
so that the fine-tuned arm starts where the frozen arm ends and is chosen on labels it
did not train on:

- a held-out split: `val_fraction` (20%) of each class's labels, seeded, at least one
  image per class, never the test split. The two trained arms learn on the rest and are
  selected on it; a budget of one label per class has nothing to hold out, and its
  fine-tuned arm is the linear probe;
- linear probe, then fine-tune (LP-FT, Kumar et al. 2022): the new head starts as the
  frozen protocol's logistic regression fitted on the training part, folded into one
  Dense layer (`evaluate.linear_weights`), so step 0 of every fine-tuning run *is* the
  frozen probe and fine-tuning does not begin by pushing random-head gradients into the
  encoder;
- candidates (`Recipe.candidates`): each a BatchNorm mode and a backbone learning rate
  (multiple of `head_lr`); by default ("frozen", 0.1), gentle fine-tuning with the
  pretraining statistics, and ("train", 1.0), the encoder trained like the scratch arm
  with batch statistics adapted to the target data. Each is scored on the held-out split
  `evals` times during training (early stopping: its best step is kept);
- selection: the candidate and step with the best held-out accuracy, where a candidate
  must beat step 0 (the probe) by more than the held-out split's noise: one standard
  error of the probe's held-out accuracy p, sqrt(p (1 - p) / n), and at least one image
  (1 / n). With 100 labels 20 are held out, and one image is 5 points: on the digits at
  10 per class a fine-tuned candidate that beat the probe by one held-out image lost
  6 points to it on the test set (2026-12-05). If the probe wins, the fine-tuned arm is
  the frozen arm's own
  classifier (fitted on all the labels), so it is never below the frozen arm by
  construction; otherwise the selected network (trained on the training part);
- light augmentation only: the preset's random horizontal flip and, with p=0.8, a
  reflected translation of up to +-4 px (`light_augment`), never AMDIM's colour jitter or
  grayscale, which fight a classifier trained on a few hundred images;
- Adam with separate learning rates for the head and the encoder, each with a cosine
  decay to zero (two optimizers, so each has its own schedule and moments);
- steps = epochs * ceil(training labels / batch), at least `min_steps`: the budget grows
  with the labels (`max_steps` caps it when a CPU budget demands; 0 = no cap).

BatchNorm. The AMDIM encoder normalises its outputs (r1, r5, r7) and, with
model.use_bn, inside its blocks. With bn "frozen", every BN layer of the pretrained
encoder runs in inference mode: it normalises with the moving statistics pretraining
estimated on the whole unlabelled set, and its scale/offset stay fixed. Batch
statistics of 64 images drawn from 500 are noisy and would overwrite those estimates.
Bn "train" uses batch statistics and updates them: what data of another domain needs.
Which one a budget gets is decided by the held-out split, and finetune.json records
every candidate's held-out curve. The scratch arm always trains BN (a random encoder
has no statistics worth keeping) with the head's learning rate for its backbone (a
random backbone has nothing to preserve), on the same training part, steps,
augmentation and batch, selected on the same held-out split (its best step).

Transfer: `run_few_label_evaluation(..., data_overrides={"data.source": "digits"})`
evaluates a run's encoder on other labelled data; only the `data` section may change,
since the encoder's architecture is fixed by its checkpoint.
"""

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from amdim_tf import compat, config_lib, durable
from amdim_tf import data as data_lib
from amdim_tf.data import augment, samples
from amdim_tf.errors import UserError, first_line
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run import checkpoints, loader
from amdim_tf.run.pixels import (
    PixelClassifier,
    assert_pixels_shape,
    class_outputs,
    min_image_side,
    unless_empty,
    views,
)
from amdim_tf.run.run_config import load_run_config
from amdim_tf.use import evaluate, export, report
from amdim_tf.use.progress import Progress

ARMS = ("frozen", "finetune", "scratch")
ARM_TITLES = {
    "frozen": "frozen r1 + logistic regression",
    "finetune": "fine-tuned (pretrained init)",
    "scratch": "same network from scratch",
}
BN_MODES = ("frozen", "train")
CLASSIFIER_JSON = "classifier.json"
RESULT_FILE = "finetune.json"  # written last: the manifest of a complete out_dir
WHAT = "a few-label evaluation"  # for errors about out_dir


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the fine-tuning and scratch arms train and are selected (module docstring)."""

    epochs: int = 30
    min_steps: int = 200
    max_steps: int = 0  # 0: no cap, the budget grows with the labels
    batch_size: int = 64
    head_lr: float = 1e-3
    # (BatchNorm mode, backbone learning rate as a multiple of head_lr) per candidate.
    candidates: tuple = (("frozen", 0.1), ("train", 1.0))
    val_fraction: float = 0.2
    evals: int = 10  # held-out checks per training run, evenly spaced

    def __post_init__(self):
        object.__setattr__(self, "candidates", tuple(tuple(c) for c in self.candidates))
        for bn, multiplier in self.candidates:
            if bn not in BN_MODES or not multiplier >= 0:
                raise UserError(
                    f"candidate ({bn!r}, {multiplier!r}): expected a BatchNorm mode of "
                    f"{BN_MODES} and a backbone learning-rate multiplier >= 0."
                )
        if not self.candidates:
            raise UserError("Recipe needs at least one fine-tuning candidate.")
        if self.batch_size < 1 or self.min_steps < 1 or 0 < self.max_steps < self.min_steps:
            raise UserError(
                f"Recipe needs batch_size >= 1, min_steps >= 1 and max_steps 0 (no cap) or "
                f">= min_steps, received batch_size={self.batch_size}, "
                f"min_steps={self.min_steps}, max_steps={self.max_steps}."
            )
        if not 0.0 < self.val_fraction < 1.0 or self.evals < 1:
            raise UserError(
                f"Recipe needs 0 < val_fraction < 1 and evals >= 1, received "
                f"val_fraction={self.val_fraction}, evals={self.evals}."
            )

    def steps(self, num_labels: int) -> int:
        steps = max(self.epochs * math.ceil(num_labels / self.batch_size), self.min_steps)
        return min(steps, self.max_steps) if self.max_steps else steps


def parse_candidates(items) -> tuple:
    """["frozen:0.1", "train:1"] -> (("frozen", 0.1), ("train", 1.0)), for the command line."""
    out = []
    for item in items:
        bn, _, multiplier = str(item).partition(":")
        try:
            out.append((bn.strip(), float(multiplier)))
        except ValueError:
            raise UserError(
                f"candidate {item!r}: expected BN:MULTIPLIER, e.g. frozen:0.1 or train:1."
            ) from None
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Budget:
    """A label budget: a fraction of the train split, or a number of images per class."""

    fraction: float = 0.0
    per_class: int = 0

    def __post_init__(self):
        if bool(self.fraction) == bool(self.per_class):
            raise UserError(
                f"A label budget is a fraction or a per-class count, received "
                f"fraction={self.fraction!r}, per_class={self.per_class!r}."
            )
        if not 0.0 <= self.fraction <= 1.0 or self.per_class < 0:
            raise UserError(
                f"Label fractions lie in (0, 1] and per-class counts are positive; received "
                f"fraction={self.fraction!r}, per_class={self.per_class!r}."
            )

    @property
    def name(self) -> str:
        return f"{100 * self.fraction:g}%" if self.fraction else f"{self.per_class}/class"

    def resolve(self, num_train: int, names) -> int:
        """Images per class for a train split of `num_train` images and classes `names`."""
        if self.per_class:
            return self.per_class
        images = round(self.fraction * num_train)
        per_class = images // len(names)
        if per_class < 1:
            need = len(names) / num_train
            raise UserError(
                f"label budget {self.name} of {num_train:,} train images is {images} "
                f"image(s), fewer than one per class: class 0 ({names[0]!r}) and "
                f"{len(names) - 1} others would have no example. Use a fraction of at "
                f"least {need:.2g} or a per-class count."
            )
        return per_class


def _numbers(name, values, kind, example) -> list:
    """`values` as numbers of `kind`; a UserError naming the flag `name` otherwise."""
    try:
        return [kind(v) for v in values]
    except (TypeError, ValueError):
        shown = ",".join(map(str, values))
        raise UserError(
            f"--{name}={shown} is not allowed; expected {kind.__name__}s, e.g. {example}."
        ) from None


def parse_budgets(fractions=(), per_class=()) -> list:
    """Budgets from fractions (0.01 = 1%) and per-class counts (the --fractions and
    --per_class flags of amdim-finetune), smallest first."""
    budgets = [Budget(fraction=f) for f in _numbers("fractions", fractions, float, "0.01,0.1")]
    budgets += [Budget(per_class=n) for n in _numbers("per_class", per_class, int, "10,50")]
    if not budgets:
        raise UserError("No label budget given; pass fractions (e.g. 0.01,0.1) or per_class.")
    return budgets


def class_names(data) -> tuple:
    """Names of the classes, index order: the source's own (a folder's class directories,
    an npz file's `class_names`), else '0', '1', ..."""
    source = data_lib.opened(data)
    k = source.num_classes()
    names = source.class_names()
    if len(names) == k:
        return tuple(str(n) for n in names)
    return tuple(str(i) for i in range(k))


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


def labelled_subset(data, per_class, seed, names):
    """(images float32 [N, S, S, 3] eval views, labels int64 [N]): `per_class` per class.

    Seeded and class-balanced (data.make_eval_dataset(balanced=True)); the same seed
    gives the same images for every arm. A class left without an example is an error
    naming it; an unlabelled split is refused.
    """
    source, data = data, data_lib.data_section(data)
    split = data.train_split
    try:
        x, y = samples.eval_views(
            source, split, per_class * len(names), seed, balanced=True, batch=500
        )
    except ValueError as e:
        raise UserError(
            f"few-label evaluation needs labelled images in split {split!r} of "
            f"data.source={data.source!r} (class sub-directories, or labels other than -1): "
            f"{first_line(e)}"
        ) from e
    if not len(y):
        raise UserError(
            f"split {split!r} of data.source={data.source!r} has no labelled images (every "
            "label is -1); few-label evaluation needs class labels."
        )
    counts = np.bincount(y, minlength=len(names))
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        c = int(empty[0])
        raise UserError(
            f"class {c} ({names[c]!r}) has no labelled example in split {split!r} of "
            f"data.source={data.source!r}, so no classifier can learn it; add images of it "
            "or evaluate on data whose classes all have labels."
        )
    return x, y


def _eval_split(data, max_examples):
    source, data = data, data_lib.data_section(data)
    seed = 0 if max_examples else None
    x, y = samples.eval_views(source, data.eval_split, max_examples, seed, batch=500)
    if not len(y):
        raise UserError(f"eval split {data.eval_split!r} has no labelled images.")
    return x, y


def freeze_batch_norm(encoder) -> int:
    """Puts every BatchNorm of `encoder` in inference mode (Keras 3: trainable=False)."""
    n = 0
    for layer in compat.nested_layers(encoder):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            n += 1
    return n


def build_classifier(encoder, num_classes, seed=0):
    """images [B, S, S, 3] (normalised) -> logits [B, K]: the encoder's r1 + a linear head."""
    size = encoder.image_size
    keras.utils.set_random_seed(seed)
    images = keras.Input((size, size, 3), name="images")
    r1 = encoder(images)[GLOBAL]  # [B, 1, 1, D]
    flat = keras.layers.Flatten(name="r1_flat")(r1)  # [B, D]
    logits = keras.layers.Dense(num_classes, name="head")(flat)  # [B, K]
    return keras.Model(images, logits, name="classifier")


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


def holdout_split(y, fraction, seed) -> tuple:
    """(train indices, held-out indices) of labels y [N]: `fraction` of each class, at
    least one image and never all of a class, seeded. A class of one image stays whole in
    training, so a budget of one label per class has an empty held-out split."""
    held = samples.held_out(y, fraction, [seed, 7])  # [N] bool
    return np.flatnonzero(~held).astype(np.int64), np.flatnonzero(held).astype(np.int64)


def set_head(model, kernel, bias) -> None:
    """Starts the classifier's head from a linear probe (`evaluate.linear_weights`)."""
    model.get_layer("head").set_weights([kernel, bias])


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


def train_classifier(model, encoder, x, y, recipe, seed, backbone_lr, bn, held_out=None) -> dict:
    """Trains `model` (built by build_classifier around `encoder`) on (x, y) in place.

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
    for variables, lr in ((backbone, backbone_lr), (head, recipe.head_lr)):
        if variables and lr > 0:
            opt = _optimizer(lr, steps)
            opt.build(variables)
            optimizers.append((opt, variables))
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

    curve, best = [], None
    if held_out is not None:
        every = max(1, steps // recipe.evals)
        score = logits_fn(model)

        def check(n):
            acc = accuracy(model, *held_out, logits=score)
            curve.append([n, acc])
            nonlocal best
            if best is None or acc > best[1]:  # strict: the earliest step wins ties
                best = (n, acc, [v.numpy() for v in model.variables])

        check(0)
    start, losses = time.perf_counter(), []
    for n, (images, labels) in enumerate(_train_dataset(x, y, recipe.batch_size, steps, seed)):
        loss = float(step(images, labels))
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite fine-tuning loss {loss} at step {n}.")
        losses.append(loss)
        if held_out is not None and ((n + 1) % every == 0 or n + 1 == steps):
            check(n + 1)
    info = {"steps": steps, "loss": float(np.mean(losses[-10:])), "seconds": 0.0}
    if held_out is not None:
        for v, value in zip(model.variables, best[2], strict=True):
            v.assign(value)
        info.update(best_step=best[0], val_acc=best[1], curve=curve)
    info["seconds"] = time.perf_counter() - start
    return info


def _features(encoder, x, y):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(500)
    return evaluate.extract_features(encoder, ds)


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
    return export.write_saved_model(*_classifier_archive(classifier), output)


def _classifier_archive(classifier: PixelClassifier):
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


def _summary(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["arm"], r["budget"]), []).append(r)
    out = []
    for (arm, budget), rs in groups.items():
        accs = [r["test_acc"] for r in rs]
        out.append(
            {
                "arm": arm,
                "budget": budget,
                "n_labels": rs[0]["n_labels"],
                "mean": float(np.mean(accs)),
                "min": float(np.min(accs)),
                "max": float(np.max(accs)),
                "seeds": [r["seed"] for r in rs],
            }
        )
    return out


def format_table(summary, title="", rows=()):
    """Markdown: one row per arm, one column per label budget (mean, min-max over seeds),
    the best mean of each column in bold (every arm that ties with it at the precision
    shown); then, from `rows`, what the fine-tuned arm selected per budget and seed."""
    budgets = []
    for s in summary:
        if (s["budget"], s["n_labels"]) not in budgets:
            budgets.append((s["budget"], s["n_labels"]))
    arms = [a for a in ARMS if any(s["arm"] == a for s in summary)]
    cells = {(s["arm"], s["budget"]): s for s in summary}
    best = {
        b: max(round(100 * s["mean"], 1) for s in summary if s["budget"] == b) for b, _ in budgets
    }
    head = " | ".join(f"{b} ({n:,} labels)" for b, n in budgets)
    lines = [title, ""] if title else []
    lines += [f"| arm | {head} |", "|---" * (len(budgets) + 1) + "|"]
    for arm in arms:
        row = []
        for b, _ in budgets:
            s = cells.get((arm, b))
            if s is None:
                row.append("")
                continue
            mean = f"{100 * s['mean']:.1f}%"
            if len(arms) > 1 and round(100 * s["mean"], 1) == best[b]:
                mean = f"**{mean}**"
            if len(s["seeds"]) > 1:
                mean += f" ({100 * s['min']:.1f}-{100 * s['max']:.1f}, {len(s['seeds'])} seeds)"
            row.append(mean)
        lines.append(f"| {ARM_TITLES[arm]} | " + " | ".join(row) + " |")
    chosen = [r for r in rows if r["arm"] == "finetune" and "selected" in r]
    if chosen:
        lines += ["", "Fine-tuned arm, selected on the held-out labels:"]
        lines += [f"- {r['budget']}, seed {r['seed']}: {r['selected']}" for r in chosen]
    return "\n".join(lines)


def plot_accuracy(summary, path, title):
    """PNG of test accuracy (%) against the number of labels (log x), one line per arm."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for arm in ARMS:
        pts = sorted((s["n_labels"], s) for s in summary if s["arm"] == arm)
        if not pts:
            continue
        n = [p for p, _ in pts]
        mean = np.array([100 * s["mean"] for _, s in pts])
        lo = mean - np.array([100 * s["min"] for _, s in pts])
        hi = np.array([100 * s["max"] for _, s in pts]) - mean
        ax.errorbar(n, mean, yerr=[lo, hi], marker="o", capsize=3, label=ARM_TITLES[arm])
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return report.save_png(fig, path, dpi=110)


def _fine_tune(pretrained_copy, features, probe, x, y, train, held, names, recipe, seed):
    """The fine-tuned arm of one label subset: LP-FT candidates selected on the held-out
    split (module docstring). Returns (classifier model, row fields)."""
    k = len(names)
    info = {"n_train": len(train), "n_held_out": len(held), "candidates": []}
    best = None  # (held-out accuracy, model, what): the probe until a candidate beats it
    margin = 0.0
    if len(held):
        lp = evaluate.fit_linear(features[train], y[train], seed=seed)
        for bn, multiplier in recipe.candidates:
            encoder = pretrained_copy()
            model = build_classifier(encoder, k, seed)
            set_head(model, *evaluate.linear_weights(lp, k))
            result = train_classifier(
                model, encoder, x[train], y[train], recipe, seed,
                backbone_lr=recipe.head_lr * multiplier, bn=bn, held_out=(x[held], y[held]),
            )  # fmt: skip
            info["candidates"].append({"bn": bn, "backbone_lr_multiplier": multiplier, **result})
            if best is None:  # step 0 of every candidate is the probe fitted on `train`
                p, n = result["curve"][0][1], len(held)
                margin = max(1.0 / n, math.sqrt(p * (1.0 - p) / n))
                best = (p, None, "linear probe")
                info["probe_val_acc"], info["margin"] = p, margin
            to_beat = best[0] + margin if best[1] is None else best[0]
            if result["best_step"] > 0 and result["val_acc"] > to_beat + 1e-12:
                what = f"bn {bn}, backbone x{multiplier:g}, step {result['best_step']}"
                best = (result["val_acc"], model, what)
        info["val_acc"] = best[0]
    if best is None or best[1] is None:
        # The probe won (or nothing was held out): the frozen arm's classifier, fitted on
        # every label, as a network.
        model = build_classifier(pretrained_copy(), k, seed)
        set_head(model, *evaluate.linear_weights(probe, k))
        info["selected"] = "linear probe" if len(held) else "linear probe (nothing held out)"
        return model, info
    info["selected"] = best[2]
    return best[1], info


def run_few_label_evaluation(
    workdir,
    out_dir,
    budgets,
    seeds=(1,),
    arms=ARMS,
    recipe=Recipe(),
    which="latest",
    data_overrides=None,
    max_test=0,
):
    """Frozen / fine-tuned / scratch test accuracy of a run's encoder at several label budgets.

    Args:
        workdir: a directory written by amdim-train (read only).
        out_dir: where finetune.{md,json,png}, classifier.keras and export/1 are written
            (the fine-tuned classifier of the largest budget and first seed).
        budgets: `Budget`s (parse_budgets).
        seeds: label subset and training seeds; every arm uses the same subset per seed.
        arms: a subset of ARMS.
        recipe: the fine-tuning / scratch `Recipe`.
        which: "latest" or "best" checkpoint of the run.
        data_overrides: {"data.KEY": value} or ["data.KEY=VALUE", ...] for evaluation on
            other data (transfer); see `config_lib.with_data_overrides`.
        max_test: score a seeded sample of this many eval images (0 = all of them).

    Returns:
        dict with "rows" (one per arm, budget, seed), "summary", "table" (markdown) and
        the paths written.
    """
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise UserError(f"unknown arms {unknown or arms}; expected a subset of {ARMS}.")
    run_config = load_run_config(workdir)
    config = config_lib.with_data_overrides(run_config, data_overrides)
    data = config.data
    checkpoint = os.path.basename(checkpoints.checkpoint_path(workdir, which))
    preset = augment.preset_for(data.augment, data.image_size)
    source = data_lib.open_source(data)  # opened once: one scan for every budget and seed
    names = class_names(source)
    num_train = data_lib.num_examples(source, data.train_split)
    plan = [(b, b.resolve(num_train, names)) for b in budgets]
    plan.sort(key=lambda p: p[1])
    output = durable.OutputDir(out_dir, RESULT_FILE, WHAT)  # refused before the work

    x_test, y_test = _eval_split(source, max_test)
    # One restore of the checkpoint; every fine-tuning run starts from a copy of it.
    pretrained = loader.open_encoder(workdir, which).encoder
    pretrained_weights = pretrained.get_weights()

    def pretrained_copy():
        encoder = loader.untrained_encoder(run_config)
        encoder.set_weights(pretrained_weights)
        return encoder

    test_features = _features(pretrained, x_test, y_test)
    rows, saved = [], {}
    # Kinds in the order the loop below runs them: a frozen arm takes a second, the others
    # minutes, so each kind's ETA is its own.
    kinds = [arm for arm in ("frozen", "finetune", "scratch") if arm in arms]
    kinds *= len(plan) * len(seeds)
    progress = Progress(len(kinds), kinds=kinds)
    for budget, per_class in plan:
        for seed in seeds:
            x, y = labelled_subset(source, per_class, seed, names)
            base = {"budget": budget.name, "per_class": per_class, "n_labels": len(x), "seed": seed}
            what = f"{budget.name}, {len(x)} labels, seed {seed}"
            features = _features(pretrained, x, y)[0]
            probe = evaluate.fit_linear(features, y, seed=seed)  # the frozen arm's classifier
            train, held = holdout_split(y, recipe.val_fraction, seed)
            if "frozen" in arms:
                progress.start(f"frozen ({what})")
                acc = float(np.mean(probe.predict(test_features[0]) == test_features[1]))
                rows.append({**base, "arm": "frozen", "test_acc": acc})
                progress.done(f"{100 * acc:.1f}%")
            if "finetune" in arms:
                progress.start(f"finetune ({what})")
                model, info = _fine_tune(
                    pretrained_copy, features, probe, x, y, train, held, names, recipe, seed
                )
                acc = accuracy(model, x_test, y_test)
                rows.append({**base, "arm": "finetune", "test_acc": acc, **info})
                progress.done(f"{100 * acc:.1f}% ({info['selected']})")
                if seed == seeds[0]:
                    saved = {"model": model, "budget": budget.name}
            if "scratch" in arms:
                progress.start(f"scratch ({what})")
                encoder = loader.untrained_encoder(config, seed=seed)
                model = build_classifier(encoder, len(names), seed)
                info = {"n_train": len(train), "n_held_out": len(held)}
                if len(held):
                    info.update(train_classifier(
                        model, encoder, x[train], y[train], recipe, seed,
                        backbone_lr=recipe.head_lr, bn="train", held_out=(x[held], y[held]),
                    ))  # fmt: skip
                else:  # nothing to select on: the last step
                    info.update(train_classifier(
                        model, encoder, x, y, recipe, seed, backbone_lr=recipe.head_lr, bn="train"
                    ))  # fmt: skip
                acc = accuracy(model, x_test, y_test)
                rows.append({**base, "arm": "scratch", "test_acc": acc, **info})
                progress.done(f"{100 * acc:.1f}%")

    summary = _summary(rows)
    source = data.source if data.source != "npz" else os.path.basename(data.path)
    title = (
        f"{source} ({data.eval_split}: {len(y_test):,} images), encoder of {workdir} "
        f"({checkpoint}, pretrained on {run_config.data.source}"
        f"{'' if run_config.data.source != 'npz' else ' ' + os.path.basename(run_config.data.path)})"
    )
    table = format_table(summary, f"Test accuracy, {title}", rows)
    result = {
        "workdir": workdir,
        "checkpoint": checkpoint,
        "pretrained_data": run_config.data.to_dict(),
        "eval_data": data.to_dict(),
        # The overridden keys with their typed values (the command line gives text).
        "data_overrides": {
            key: config.data[key.split(".", 1)[1]]
            for key in config_lib.override_keys(data_overrides or {})
        },
        "class_names": list(names),
        "n_test": len(y_test),
        "recipe": dataclasses.asdict(recipe),
        "saved_classifier_budget": saved.get("budget"),
        "rows": rows,
        "summary": summary,
    }
    names_written = {"markdown": "finetune.md", "plot": "finetune.png", "json": RESULT_FILE}
    # The whole out_dir is written in a stage and renamed into place, finetune.json last:
    # a kill leaves the previous evaluation (table, classifier, export) or this one.
    with output.staged() as stage:
        with open(os.path.join(stage, "finetune.md"), "w") as f:
            f.write(table + "\n")
        plot_accuracy(
            summary, os.path.join(stage, "finetune.png"), title.replace(", encoder", "\nencoder")
        )
        if saved:
            classifier = pixel_classifier(saved["model"], names, preset)
            # Plain writes: the stage is renamed into place whole.
            classifier.save(os.path.join(stage, "classifier.keras"))
            archive, info = _classifier_archive(classifier)
            export.write_archive(archive, os.path.join(stage, "export", "1"), CLASSIFIER_JSON, info)
            names_written.update(keras="classifier.keras", export=os.path.join("export", "1"))
        with open(os.path.join(stage, RESULT_FILE), "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
    paths = {k: os.path.join(out_dir, v) for k, v in names_written.items()}
    return {**result, "table": table, "paths": paths}
