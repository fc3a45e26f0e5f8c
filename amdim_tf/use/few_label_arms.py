"""The three arms of the few-label protocol as a table (`ARM_RUNS`), each a function of
the shared evaluation and one label subset, and the rule that picks the classifier the
user is handed (`choose_classifier`). The recipe and why: `amdim_tf/use/finetune.py`."""

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from amdim_tf.run import loader
from amdim_tf.use import evaluate
from amdim_tf.use.classifier import accuracy, build_classifier, set_head, train_classifier
from amdim_tf.use.few_label_report import held_out_noise

# With nothing held out to choose on, the classifier written is the first of these run;
# also the order of ties.
DEFAULT_ORDER = ("finetune", "frozen", "scratch")


@dataclasses.dataclass
class Evaluation:
    """What every label subset of one evaluation shares: the encoder, the test split."""

    run_config: object
    config: object
    recipe: object  # a finetune.Recipe
    names: tuple
    pretrained: object
    pretrained_weights: list
    x_test: np.ndarray
    y_test: np.ndarray
    test_features: tuple  # (features [N, D], labels [N]) of the test split

    def pretrained_copy(self):
        """A fresh encoder with the pretrained weights: every fine-tuning run starts here."""
        encoder = loader.untrained_encoder(self.run_config)
        encoder.set_weights(self.pretrained_weights)
        return encoder


@dataclasses.dataclass
class Subset:
    """One label subset (a budget and a seed): its images, the held-out part of them, and
    the frozen encoder's features and probes, shared by the arms."""

    x: np.ndarray
    y: np.ndarray
    seed: int
    train: np.ndarray  # indices of the training part
    held: np.ndarray  # indices of the held-out part (empty at one label per class)
    features: np.ndarray  # [N, D] frozen r1 of x
    probe: object  # the frozen arm's classifier, fitted on every label
    _train_probe: object = None

    def train_probe(self):
        """The probe fitted on the training part: step 0 of every fine-tuning candidate,
        and the frozen arm as the held-out labels see it."""
        if self._train_probe is None:
            features, labels = self.features[self.train], self.y[self.train]
            self._train_probe = evaluate.fit_linear(features, labels, seed=self.seed)
        return self._train_probe


@dataclasses.dataclass
class _ArmResult:
    test_acc: float
    info: dict  # the row fields of the arm
    model: Callable  # () -> the arm's classifier network (built when it is written)
    said: str  # what the progress line says


def frozen_features(encoder, x, y):
    """(r1 features [N, D], labels [N]) of in-memory eval views: the frozen protocol."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(500)
    return evaluate.extract_features(encoder, ds)


def _probe_classifier(ev: Evaluation, subset: Subset):
    """The frozen arm's classifier (fitted on every label) as a network."""
    k = len(ev.names)
    model = build_classifier(ev.pretrained_copy(), k, subset.seed)
    set_head(model, *evaluate.linear_weights(subset.probe, k))
    return model


def _fine_tune(ev: Evaluation, subset: Subset):
    """The fine-tuned arm of one label subset: LP-FT candidates selected on the held-out
    split (module docstring). Returns (classifier model, row fields)."""
    k, recipe, seed, held = len(ev.names), ev.recipe, subset.seed, subset.held
    x, y, train = subset.x, subset.y, subset.train
    info = {"n_train": len(train), "n_held_out": len(held), "candidates": []}
    best = None  # (held-out accuracy, model, what): the probe until a candidate beats it
    margin = 0.0
    if len(held):
        lp = subset.train_probe()
        for bn, multiplier in recipe.candidates:
            encoder = ev.pretrained_copy()
            model = build_classifier(encoder, k, seed)
            set_head(model, *evaluate.linear_weights(lp, k))
            result = train_classifier(
                model, encoder, x[train], y[train], recipe, seed,
                backbone_lr=recipe.head_lr * multiplier, bn=bn, held_out=(x[held], y[held]),
            )  # fmt: skip
            info["candidates"].append({"bn": bn, "backbone_lr_multiplier": multiplier, **result})
            if best is None:  # step 0 of every candidate is the probe fitted on `train`
                p, n = result["curve"][0][1], len(held)
                margin = held_out_noise(p, n)
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
        info["selected"] = "linear probe" if len(held) else "linear probe (nothing held out)"
        return _probe_classifier(ev, subset), info
    info["selected"] = best[2]
    return best[1], info


def _frozen_arm(ev: Evaluation, subset: Subset) -> _ArmResult:
    features, labels = ev.test_features
    acc = float(np.mean(subset.probe.predict(features) == labels))
    info = {}
    if len(subset.held):
        held = subset.train_probe().predict(subset.features[subset.held])
        info["val_acc"] = float(np.mean(held == subset.y[subset.held]))
    return _ArmResult(acc, info, lambda: _probe_classifier(ev, subset), f"{100 * acc:.1f}%")


def _finetune_arm(ev: Evaluation, subset: Subset) -> _ArmResult:
    model, info = _fine_tune(ev, subset)
    acc = accuracy(model, ev.x_test, ev.y_test)
    return _ArmResult(acc, info, lambda: model, f"{100 * acc:.1f}% ({info['selected']})")


def _scratch_arm(ev: Evaluation, subset: Subset) -> _ArmResult:
    x, y, train, held, seed = subset.x, subset.y, subset.train, subset.held, subset.seed
    encoder = loader.untrained_encoder(ev.config, seed=seed)
    model = build_classifier(encoder, len(ev.names), seed)
    info = {"n_train": len(train), "n_held_out": len(held)}
    lr = ev.recipe.head_lr
    if len(held):
        info.update(train_classifier(
            model, encoder, x[train], y[train], ev.recipe, seed, backbone_lr=lr, bn="train",
            held_out=(x[held], y[held]),
        ))  # fmt: skip
    else:  # nothing to select on: the last step
        info.update(train_classifier(model, encoder, x, y, ev.recipe, seed, lr, "train"))
    acc = accuracy(model, ev.x_test, ev.y_test)
    return _ArmResult(acc, info, lambda: model, f"{100 * acc:.1f}%")


# Each arm of the protocol, run in ARMS order on the same label subset.
ARM_RUNS = {"frozen": _frozen_arm, "finetune": _finetune_arm, "scratch": _scratch_arm}


def choose_classifier(held_out: dict, n_held_out: int, probe_is_tuned: bool = False) -> dict:
    """Which arm's classifier the user gets: the best on the held-out labels.

    held_out: {arm: held-out accuracy, or None when nothing was held out} of the arms run;
    probe_is_tuned: the fine-tuned arm selected the linear probe, so it is the frozen
    arm's classifier and not a runner-up of its own. Ties go to DEFAULT_ORDER.
    Returns {"arm", "held_out", "n_held_out", "runner_up", "margin", "noise"} (the last
    three None when there is nothing to compare) and a "reason" when nothing was.
    """
    scored = {a: v for a, v in held_out.items() if v is not None}
    choice = {"held_out": scored, "n_held_out": n_held_out, "runner_up": None}
    choice.update(margin=None, noise=None)
    if not scored:
        arm = next(a for a in DEFAULT_ORDER if a in held_out)
        reason = "no labels held out to choose on: the default arm"
        return {**choice, "arm": arm, "reason": reason if len(held_out) > 1 else "one arm run"}
    ranked = sorted(scored, key=lambda a: (-scored[a], DEFAULT_ORDER.index(a)))
    arm = ranked[0]
    same = {"finetune", "frozen"} if probe_is_tuned else set()
    others = [a for a in ranked[1:] if not (arm in same and a in same)]
    choice.update(arm=arm, noise=held_out_noise(scored[arm], n_held_out))
    if not others:
        return {**choice, "reason": "one arm run" if len(scored) == 1 else "the same classifier"}
    return {**choice, "runner_up": others[0], "margin": scored[arm] - scored[others[0]]}
