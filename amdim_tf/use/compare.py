"""Several self-supervised methods under one budget: the library behind amdim-compare.

Owns what makes the comparison fair and resumable:
- each method's config, derived from its preset (`METHODS`, amdim_tf.presets): the same
  data, the same eval interval, no learning-rate decay (a wall-clock budget has no
  known last step to place it), then the user's KEY=VALUE overrides;
- the budget accounting: the pretraining seconds of WORKDIR/<method> are kept in
  its compare_state.json and, for an invocation killed before writing that file,
  read back from the active time of its metrics.jsonl; a method whose budget is
  spent is not trained again;
- the frozen evaluation of each encoder (`evaluate.evaluate_encoders`), cached in
  compare_state.json per checkpoint step, max_train and k; raw pixels once, cached
  in WORKDIR/pixels.json;
- the outputs WORKDIR/compare.md (the table), compare.json and compare.png (the
  online eval linear probe against active wall time).

Library code: takes a `CompareOptions`, never absl FLAGS, never exits the process.
"""

import dataclasses
import gc
import json
import math
import os
import statistics
import time
from collections.abc import Mapping

import tensorflow as tf

from amdim_tf import config_lib, durable, presets
from amdim_tf.errors import UserError
from amdim_tf.methods.nn import count_trainable_params
from amdim_tf.run import loader
from amdim_tf.run.run_config import prepare_workdir
from amdim_tf.run.train import train
from amdim_tf.run.workdir import METRICS_FILE
from amdim_tf.use import evaluate
from amdim_tf.use import report as plots

# method -> (label in tables and plots, its preset in amdim_tf.presets)
METHODS = {
    "amdim": ("AMDIM", "amdim_cifar10_cpu"),
    "dim_local": ("DIM(L)", "dim_local"),
    "dim_global": ("DIM(G)", "dim_global"),
    "cpc": ("CPC", "cpc"),
}
# Encoders of one size class (~5M parameters) where the configs allow it; see
# amdim-compare for the sizes.
DEFAULT_VARIANTS = {"amdim": "parity", "dim_local": "", "dim_global": "", "cpc": ""}
STATE_FILE = "compare_state.json"
PIXELS_FILE = "pixels.json"
FOREVER_EPOCHS = 10**6  # with a time budget, max_seconds ends the run, not the epoch count


@dataclasses.dataclass(frozen=True)
class CompareOptions:
    """What to compare, on which data, under which budget; checked when constructed.

    Attributes:
        methods: keys of `METHODS`, in table order.
        variants: method -> variant of its preset ('' is the preset's default);
            a method not listed gets `DEFAULT_VARIANTS`.
        data_source, data_path, image_size: config.data of every method.
        seconds: pretraining wall-clock budget per method (0 = no time limit).
        steps: pretraining steps per method, rounded up to whole `eval_every`
            intervals (0 = until `seconds` run out).
        eval_every: steps between online eval probe points (an "epoch").
        eval_steps: batches of each online eval (0 = the whole eval split).
        batch_size: pretraining batch of every method (0 = each config's own).
        overrides: "KEY=VALUE" for every method or "METHOD:KEY=VALUE" for one,
            applied last (see `set_overrides`).
        workdir: each method runs in WORKDIR/<method>; the outputs go here.
        overwrite: replace a method's run whose config differs (else refused).
        max_train: train examples used to fit the frozen classifiers.
        k: neighbours of the cosine kNN.
    """

    methods: tuple[str, ...] = tuple(METHODS)
    variants: Mapping[str, str] = dataclasses.field(default_factory=dict)
    data_source: str = "npz"
    data_path: str = "../shared/data/cifar10/cifar10-jpeg.npz"
    image_size: int = 32
    seconds: int = 600
    steps: int = 0
    eval_every: int = 100
    eval_steps: int = 4
    batch_size: int = 0
    overrides: tuple[str, ...] = ()
    workdir: str = "runs/compare"
    overwrite: bool = False
    max_train: int = 10000
    k: int = 20

    def __post_init__(self):
        # The messages name the tool's flags, which carry the same names as these fields.
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise UserError(
                f"--methods={','.join(self.methods)}: unknown {unknown}; choose from "
                f"{','.join(METHODS)}"
            )
        unknown = [m for m in self.variants if m not in METHODS]
        if unknown:
            raise UserError(f"variants of unknown methods {unknown}; choose from {list(METHODS)}")
        if self.seconds <= 0 and self.steps <= 0:
            raise UserError("--seconds=0 and --steps=0 leave no budget; set one of them.")
        if self.eval_every <= 0:
            raise UserError(f"--eval_every={self.eval_every} must be positive.")
        for item in self.overrides:
            method_override(item)  # syntax and method names now, keys once configs are loaded

    def variant(self, method):
        return self.variants.get(method, DEFAULT_VARIANTS[method])


def method_override(item):
    """(method or None, "KEY=VALUE") of a --set item "KEY=VALUE" or "METHOD:KEY=VALUE";
    the KEY=VALUE part is checked by `config_lib.parse_override`, the one parser."""
    target, colon, rest = item.partition(":")
    if not colon or "=" in target:  # a ":" inside the value addresses no method
        target, rest = None, item
    elif target not in METHODS:
        raise UserError(f"--set={item!r}: {target!r} is not a method of {list(METHODS)}")
    try:
        config_lib.parse_override(rest)
    except ValueError as e:
        raise UserError(f"--set={item!r}: {e}") from None
    return target, rest


def set_overrides(config, method, overrides):
    """Applies the --set items addressed to every method or to `method`, in order.

    Each goes through `config_lib.apply_overrides` (literals for non-string keys,
    the ConfigDict's type check, an unknown key refused); an error names the --set.
    """
    for item in overrides:
        target, override = method_override(item)
        if target not in (None, method):
            continue
        try:
            config_lib.apply_overrides(config, [override], what=f"the {method} config")
        except ValueError as e:
            raise UserError(f"--set={item!r}: {e}") from None
    return config


def method_config(method, options):
    """(config, its name for the table) of one method under `options`."""
    variant = options.variant(method)
    name = METHODS[method][1] + (f":{variant}" if variant else "")
    c = presets.load(name)
    c.data.source = options.data_source
    c.data.path = options.data_path
    if options.data_source == "digits":
        c.data.name = "digits"
    c.data.image_size = c.model.image_size = options.image_size
    c.data.augment = ""  # the preset of the image size
    if options.batch_size:
        c.train.batch_size = options.batch_size
    c.train.eval_steps = options.eval_steps
    c.optim.decay_epochs = ()
    if options.steps:
        c.train.steps_per_epoch = min(options.eval_every, options.steps)
        c.train.epochs = math.ceil(options.steps / c.train.steps_per_epoch)
    else:
        c.train.steps_per_epoch = options.eval_every
        c.train.epochs = FOREVER_EPOCHS
    set_overrides(c, method, options.overrides)
    return c, name


def _read_json(path, default):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return default


def _checkpoint_step(workdir):
    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else -1


def _metrics_values(metrics, key):
    """The values of `key` in a metrics.jsonl (none if the file does not exist)."""
    if not os.path.exists(metrics):
        return []
    return [r[key] for r in plots.read_metrics(metrics) if key in r]


def _run_method(method, config, config_name, options):
    """Pretrains (or resumes) one method and evaluates its frozen encoder.

    Returns its table row, or None if the pretraining was preempted (its state
    is saved; the same call again continues it).
    """
    label = METHODS[method][0]
    wd = os.path.join(options.workdir, method)
    state_path = os.path.join(wd, STATE_FILE)
    state = _read_json(state_path, {"pretrain_seconds": 0.0})
    budget = options.seconds
    target = config.train.steps_per_epoch * config.train.epochs
    # Refuse another run's workdir before deciding that its budget is spent.
    prepare_workdir(config, wd, options.overwrite)
    if not os.path.exists(os.path.join(wd, "checkpoints")):
        state = {"pretrain_seconds": 0.0}  # new or overwritten run
    metrics = os.path.join(wd, METRICS_FILE)
    logged = plots.active_seconds(_metrics_values(metrics, "time"))
    # The metrics' active time also counts an invocation killed before it saved the state.
    spent = max(state["pretrain_seconds"], logged[-1] if logged else 0.0)
    step = _checkpoint_step(wd)
    done = step >= 0 and ((budget and spent >= budget) or step >= target)
    encoder = None
    if not done:
        remaining = budget - spent if budget else 0
        config.train.max_seconds = int(math.ceil(remaining))
        until = " or ".join(
            ([f"{remaining:.0f} s"] if budget else [])
            + ([f"to step {target}"] if options.steps else [])
        )
        print(f"\n== {label}: {config_name}, pretraining {until} in {wd}", flush=True)
        t0 = time.time()
        model, result = train(config, wd, overwrite=options.overwrite)
        state["pretrain_seconds"] = spent + time.time() - t0
        state["encoder_params"] = count_trainable_params(model.encoder)
        durable.write_json(state_path, state)
        if result["status"] == "preempted":
            return None
        encoder, step = model.encoder, int(model.optimizer.iterations.numpy())
    else:
        print(
            f"\n== {label}: budget spent ({spent:.0f} s, step {step}) in {wd}; not training again."
        )

    key = {"step": step, "max_train": options.max_train, "k": options.k}
    cached = state.get("eval")
    if not cached or {k: cached.get(k) for k in key} != key or "encoder_params" not in state:
        if encoder is None:
            encoder = loader.open_encoder(wd).encoder
        rows = evaluate.evaluate_encoders(
            config, {label: encoder}, pixels=False, max_train=options.max_train, k=options.k
        )
        scores = {k: rows[0][k] for k in ("linear_acc", "knn_acc", "n_train", "n_test")}
        state["eval"] = {**key, **scores}
        state["encoder_params"] = count_trainable_params(encoder)
        durable.write_json(state_path, state)
    speeds = _metrics_values(metrics, "perf/images_per_sec")
    return {
        "method": method,
        "model": label,
        "config": config_name,
        "encoder_params": state["encoder_params"],
        "batch_size": config.train.batch_size,
        "images_per_sec": statistics.median(speeds) if speeds else None,
        "steps": step,
        "pretrain_seconds": state["pretrain_seconds"],
        **state["eval"],
    }


def _pixel_row(config, options):
    """Raw pixels through the same protocol, cached in WORKDIR/pixels.json per data and settings."""
    path = os.path.join(options.workdir, PIXELS_FILE)
    key = {
        "source": config.data.source,
        "path": config.data.path,
        "image_size": config.data.image_size,
        "max_train": options.max_train,
        "k": options.k,
    }
    cached = _read_json(path, {})
    if cached.get("key") != key:
        rows = evaluate.evaluate_encoders(
            config, {}, pixels=True, max_train=options.max_train, k=options.k
        )
        cached = {"key": key, "row": rows[0]}
        durable.write_json(path, cached)
    return {"method": "pixels", **cached["row"]}


def format_markdown(rows, budget_line, k):
    """The comparison table (rows of `compare`), then `budget_line`."""
    lines = [
        "| method | config | encoder parameters | batch | images/s (median) | steps | "
        f"pretraining time | frozen linear acc | kNN acc (cosine, k={k}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        accs = f"{100 * r['linear_acc']:.1f}% | {100 * r['knn_acc']:.1f}% |"
        if r["method"] == "pixels":
            lines.append(f"| raw pixels | - | - | - | - | - | - | {accs}")
            continue
        speed = f"{r['images_per_sec']:.0f}" if r["images_per_sec"] else "-"
        lines.append(
            f"| {r['model']} | `{r['config']}` | {r['encoder_params']:,} | "
            f"{r['batch_size']} | {speed} | {r['steps']} | {r['pretrain_seconds']:.0f} s | {accs}"
        )
    return "\n".join(lines) + "\n\n" + budget_line + "\n"


def compare(options):
    """Pretrains, evaluates and tabulates every method of `options`; resumes where it stopped.

    Returns a dict with "status": "completed" or "preempted". Preemption is a
    status, not an exit: the library never ends the process, and the tool maps it
    to train.PREEMPTED_EXIT_CODE as amdim-train does with `train`'s status.
    Completed: "rows" (one per method, then raw pixels), "table" (the markdown of
    compare.md without its title) and "paths" {"md", "json", "png"}. Preempted:
    "preempted" (the label of the method that was stopped) and the "rows" before it.
    """
    # Every config error before any training.
    configs = {m: method_config(m, options) for m in options.methods}
    os.makedirs(options.workdir, exist_ok=True)
    rows = []
    for m, (config, name) in configs.items():
        row = _run_method(m, config, name, options)
        if row is None:
            return {"status": "preempted", "preempted": METHODS[m][0], "rows": rows}
        rows.append(row)
        gc.collect()  # the finished method's model is no longer referenced
    first = configs[options.methods[0]][0]
    rows.append(_pixel_row(first, options))

    budget = " or ".join(
        ([f"{options.seconds} s of wall time"] if options.seconds else [])
        + ([f"{options.steps} steps"] if options.steps else [])
    )
    data = (
        first.data.source
        + (f" {first.data.path}" if first.data.source != "digits" else "")
        + f" at {first.data.image_size} px"
    )
    budget_line = (
        f"Pretraining budget per method: {budget} (whichever ends first; the time includes "
        f"model build and the online evals every {options.eval_every} steps). Data: {data}. "
        "Frozen protocol: r1 features, logistic regression and cosine kNN fitted on "
        f"{rows[0]['n_train']} train images, scored on {rows[0]['n_test']} eval images. "
        "Images/s counts both views of each pair."
    )
    table = format_markdown(rows, budget_line, options.k)
    paths = {ext: os.path.join(options.workdir, f"compare.{ext}") for ext in ("md", "json", "png")}
    durable.write_text(paths["md"], "# Self-supervised methods under one budget\n\n" + table)
    durable.write_json(
        paths["json"],
        {
            "budget": {
                "seconds": options.seconds,
                "steps": options.steps,
                "eval_every": options.eval_every,
            },
            "data": {
                "source": first.data.source,
                "path": first.data.path,
                "image_size": first.data.image_size,
            },
            "max_train": options.max_train,
            "k": options.k,
            "rows": rows,
        },
    )
    series = {}
    for r in rows[:-1]:
        metrics = os.path.join(options.workdir, r["method"], METRICS_FILE)
        series[r["model"]] = plots.curves_from_metrics(metrics) if os.path.exists(metrics) else []
    plots.plot_probe_curves(series, paths["png"], f"Online linear probe on the eval split, {data}")
    return {"status": "completed", "rows": rows, "table": table, "paths": paths}
