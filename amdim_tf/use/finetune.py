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
  with the labels; `max_steps` caps it when a CPU budget demands (0 = no cap), below
  `min_steps` too: a cap is a cap.

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

The classifier handed to the user (classifier.keras, export/1) is the arm best on the
held-out labels of the largest budget and first seed, scratch included: a network
trained from scratch on the labels can beat a pretrained encoder (one pretrained briefly
or on other data; a 500-step CIFAR-10 encoder lost to scratch at 50 labels per class,
75.1% against 73.9% frozen and 73.4% fine-tuned). The frozen arm is scored there by the
probe fitted on the training part (step 0 of fine-tuning), the two trained arms by their
selected step. The report names the arm, its margin over the runner-up and the held-out
noise above; ties go to the fine-tuned arm, then the frozen one. With nothing held out
(one label per class) the fine-tuned arm is written, as the probe it then is.

Transfer: `run_few_label_evaluation(..., data_overrides={"data.source": "digits"})`
evaluates a run's encoder on other labelled data; only the `data` section may change,
since the encoder's architecture is fixed by its checkpoint.
"""

import dataclasses
import json
import math
import os

from amdim_tf import config_lib, durable
from amdim_tf import data as data_lib
from amdim_tf.data import augment
from amdim_tf.errors import UserError
from amdim_tf.run import checkpoints, loader
from amdim_tf.run.run_config import load_run_config
from amdim_tf.use import evaluate, export
from amdim_tf.use.classifier import (
    BN_MODES,
    CLASSIFIER_JSON,
    accuracy,
    build_classifier,
    classifier_archive,
    export_classifier,
    freeze_batch_norm,
    light_augment,
    logits_fn,
    pixel_classifier,
    set_head,
    train_classifier,
)
from amdim_tf.use.few_label_arms import (
    ARM_RUNS,
    DEFAULT_ORDER,
    Evaluation,
    Subset,
    choose_classifier,
    frozen_features,
)
from amdim_tf.use.few_label_report import (
    ARM_TITLES,
    ARMS,
    choice_text,
    format_table,
    plot_accuracy,
)
from amdim_tf.use.few_label_report import summary as _summary
from amdim_tf.use.label_budgets import (
    Budget,
    class_names,
    holdout_split,
    labelled_subset,
    parse_budgets,
)
from amdim_tf.use.label_budgets import eval_split as _eval_split
from amdim_tf.use.progress import Progress

# The names this module has always offered (tests, tools, notebooks), wherever they live now.
__all__ = [
    "ARMS", "ARM_RUNS", "ARM_TITLES", "BN_MODES", "DEFAULT_ORDER", "Budget", "CLASSIFIER_JSON", "Recipe", "accuracy",
    "build_classifier", "choose_classifier", "class_names", "export_classifier",
    "format_table", "freeze_batch_norm", "holdout_split", "labelled_subset", "light_augment",
    "logits_fn", "parse_budgets", "parse_candidates", "pixel_classifier", "plot_accuracy",
    "run_few_label_evaluation", "set_head", "train_classifier", "_eval_split", "_summary",
]  # fmt: skip

RESULT_FILE = "finetune.json"  # written last: the manifest of a complete out_dir
WHAT = "a few-label evaluation"  # for errors about out_dir


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the fine-tuning and scratch arms train and are selected (module docstring)."""

    epochs: int = 30
    min_steps: int = 200  # 0: no floor
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
        if self.epochs < 1 or self.batch_size < 1 or self.min_steps < 0 or self.max_steps < 0:
            raise UserError(
                f"Recipe needs epochs >= 1, batch_size >= 1, min_steps >= 0 and max_steps >= 0 "
                f"(0 = no cap), received epochs={self.epochs}, batch_size={self.batch_size}, "
                f"min_steps={self.min_steps}, max_steps={self.max_steps}."
            )
        if not 0.0 < self.val_fraction < 1.0 or self.evals < 1:
            raise UserError(
                f"Recipe needs 0 < val_fraction < 1 and evals >= 1, received "
                f"val_fraction={self.val_fraction}, evals={self.evals}."
            )

    def steps(self, num_labels: int) -> int:
        """epochs over `num_labels`, at least min_steps, at most max_steps (when set)."""
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


def _load(workdir, which, run_config, config, recipe, names, source, max_test):
    """The shared `Evaluation`: the pretrained encoder, the test split and its features."""
    x_test, y_test = _eval_split(source, max_test)
    # One restore of the checkpoint; every fine-tuning run starts from a copy of it.
    pretrained = loader.open_encoder(workdir, which).encoder
    return Evaluation(
        run_config, config, recipe, names, pretrained, pretrained.get_weights(),
        x_test, y_test, frozen_features(pretrained, x_test, y_test),
    )  # fmt: skip


def _label_subset(ev: Evaluation, source, per_class: int, seed: int) -> Subset:
    x, y = labelled_subset(source, per_class, seed, ev.names)
    features = frozen_features(ev.pretrained, x, y)[0]
    probe = evaluate.fit_linear(features, y, seed=seed)  # the frozen arm's classifier
    train, held = holdout_split(y, ev.recipe.val_fraction, seed)
    return Subset(x, y, seed, train, held, features, probe)


def _title(workdir, checkpoint, ev: Evaluation) -> str:
    def named(data):
        return data.source if data.source != "npz" else f"npz {os.path.basename(data.path)}"

    data = ev.config.data
    evaluated = data.source if data.source != "npz" else os.path.basename(data.path)
    return (
        f"{evaluated} ({data.eval_split}: {len(ev.y_test):,} images), encoder of {workdir} "
        f"({checkpoint}, pretrained on {named(ev.run_config.data)})"
    )


def _write_outputs(output, out_dir, table, summary, title, result, classifier) -> dict:
    """Writes the evaluation into `output` (a durable.OutputDir); {kind: path} written."""
    names_written = {"markdown": "finetune.md", "plot": "finetune.png", "json": RESULT_FILE}
    # The whole out_dir is written in a stage and renamed into place, finetune.json last:
    # a kill leaves the previous evaluation (table, classifier, export) or this one.
    with output.staged() as stage:
        with open(os.path.join(stage, "finetune.md"), "w") as f:
            f.write(table + "\n")
        plot_accuracy(
            summary, os.path.join(stage, "finetune.png"), title.replace(", encoder", "\nencoder")
        )
        if classifier is not None:
            # Plain writes: the stage is renamed into place whole.
            classifier.save(os.path.join(stage, "classifier.keras"))
            archive, info = classifier_archive(classifier)
            export.write_archive(archive, os.path.join(stage, "export", "1"), CLASSIFIER_JSON, info)
            names_written.update(keras="classifier.keras", export=os.path.join("export", "1"))
        with open(os.path.join(stage, RESULT_FILE), "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
    return {k: os.path.join(out_dir, v) for k, v in names_written.items()}


def _run_arms(ev: Evaluation, source, plan, seeds, arms) -> tuple:
    """Every arm on every (budget, seed) subset, in that order, one progress line each.

    Returns (rows, (budget, subset, {arm: result}) of the largest budget's first seed).
    """
    rows, chosen = [], None
    # Each unit's kind is its arm: a frozen arm takes a second, the others minutes, so each
    # kind's ETA comes from units of its own kind.
    kinds = list(arms) * (len(plan) * len(seeds))
    progress = Progress(len(kinds), kinds=kinds)
    for budget, per_class in plan:
        for seed in seeds:
            subset = _label_subset(ev, source, per_class, seed)
            base = {"budget": budget.name, "per_class": per_class, "n_labels": len(subset.y)}
            base["seed"] = seed
            what = f"{budget.name}, {len(subset.y)} labels, seed {seed}"
            results = {}
            for arm in arms:
                progress.start(f"{arm} ({what})")
                results[arm] = ARM_RUNS[arm](ev, subset)
                rows.append({**base, "arm": arm, "test_acc": results[arm].test_acc})
                rows[-1].update(results[arm].info)
                progress.done(results[arm].said)
            if seed == seeds[0]:  # the largest budget's comes last
                chosen = (budget, subset, results)
    return rows, chosen


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
            (the classifier of the arm best on the held-out labels of the largest budget
            and first seed; module docstring).
        budgets: `Budget`s (parse_budgets).
        seeds: label subset and training seeds; every arm uses the same subset per seed.
        arms: a subset of ARMS.
        recipe: the fine-tuning / scratch `Recipe`.
        which: "latest" or "best" checkpoint of the run.
        data_overrides: {"data.KEY": value} or ["data.KEY=VALUE", ...] for evaluation on
            other data (transfer); see `config_lib.with_data_overrides`.
        max_test: score a seeded sample of this many eval images (0 = all of them).

    Returns:
        dict with "rows" (one per arm, budget, seed), "summary", "saved_classifier" (the
        arm written and why), "table" (markdown) and the paths written.
    """
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise UserError(f"unknown arms {unknown or arms}; expected a subset of {ARMS}.")
    arms = [a for a in ARMS if a in arms]
    run_config = load_run_config(workdir)
    config = config_lib.with_data_overrides(run_config, data_overrides)
    checkpoint = os.path.basename(checkpoints.checkpoint_path(workdir, which))
    source = data_lib.open_source(config.data)  # opened once: one scan for every subset
    names = class_names(source)
    num_train = data_lib.num_examples(source, config.data.train_split)
    plan = sorted(((b, b.resolve(num_train, names)) for b in budgets), key=lambda p: p[1])
    if not plan:
        raise UserError("No label budget given; pass fractions (e.g. 0.01,0.1) or per_class.")
    output = durable.OutputDir(out_dir, RESULT_FILE, WHAT)  # refused before the work
    ev = _load(workdir, which, run_config, config, recipe, names, source, max_test)

    rows, (budget, subset, results) = _run_arms(ev, source, plan, seeds, arms)
    tuned = results.get("finetune")
    choice = choose_classifier(
        {arm: r.info.get("val_acc") for arm, r in results.items()},
        len(subset.held),
        probe_is_tuned=tuned is not None and tuned.info["selected"].startswith("linear probe"),
    )
    choice.update(budget=budget.name, seed=subset.seed)
    classifier = pixel_classifier(results[choice["arm"]].model(), names, _preset(config))
    summary = _summary(rows)
    title = _title(workdir, checkpoint, ev)
    table = format_table(summary, f"Test accuracy, {title}", rows) + "\n\n" + choice_text(choice)
    result = {
        "workdir": workdir,
        "checkpoint": checkpoint,
        "pretrained_data": run_config.data.to_dict(),
        "eval_data": config.data.to_dict(),
        # The overridden keys with their typed values (the command line gives text).
        "data_overrides": {
            key: config.data[key.split(".", 1)[1]]
            for key in config_lib.override_keys(data_overrides or {})
        },
        "class_names": list(names),
        "n_test": len(ev.y_test),
        "recipe": dataclasses.asdict(recipe),
        "saved_classifier_budget": budget.name,
        "saved_classifier": choice,
        "rows": rows,
        "summary": summary,
    }
    paths = _write_outputs(output, out_dir, table, summary, title, result, classifier)
    return {**result, "table": table, "paths": paths}


def _preset(config) -> str:
    return augment.preset_for(config.data.augment, config.data.image_size)
