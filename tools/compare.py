"""AMDIM against DIM(L), DIM(G) and CPC: same data, same wall-clock budget, same frozen protocol.

    python tools/compare.py [--methods=amdim,dim_local,dim_global,cpc] [--seconds=600]
        [--data_source=npz --data_path=../shared/data/cifar10/cifar10-jpeg.npz --image_size=32]
        [--workdir=runs/compare]

Each method pretrains in WORKDIR/<method> for --seconds of wall time (or --steps),
then its frozen encoder goes through tools/evaluate.py's protocol (logistic
regression and cosine kNN on r1 features of --max_train labelled train images,
scored on the whole eval split); raw pixels are evaluated once as the floor.
Writes WORKDIR/compare.md (the table), compare.json and compare.png (the online
eval linear probe against active wall time, from each metrics.jsonl).

Defaults, chosen so the encoders are of one size class (~5M parameters) where the
configs allow it:
  amdim       configs/amdim_cifar10_cpu.py:parity  5.0M (ndf 64, n_rkhs 512, depth 3), batch 128
  dim_local   configs/dim_local.py                 4.9M (DIM's own encoder, Y 64-d), batch 64
  dim_global  configs/dim_global.py                4.9M (the same encoder), batch 64
  cpc         configs/cpc.py                       1.4M (its only size), batch 64
Each method keeps its own optimiser and batch (--batch_size=N sets one for all);
learning-rate decay is switched off for all (a wall-clock budget has no known last
step to place it); warm-up is kept. An "epoch" here is --eval_every steps, so every
method gets an eval point at the same step interval; --eval_steps limits that online
eval (the final frozen evaluation always scores the whole eval split).

Re-running resumes: a method whose budget is spent (its pretraining seconds are kept in
WORKDIR/<method>/compare_state.json, or read from its metrics.jsonl if the tool was
killed) is not trained again, and its evaluation is reused
when the checkpoint step, --max_train and --k are unchanged. Raising --seconds trains
each method for the difference.
Cost: about (seconds + 1-2 min of evaluation) per method on CIFAR-10; the default run
is ~50 min on a 2-core CPU. Use --variant=tiny --data_source=digits for a smoke run.
"""

import _common  # noqa: F401  (path and environment set-up)
import ast
import importlib.util
import json
import math
import os
import statistics
import sys
import time

from absl import app, flags, logging

# method -> (label in tables and plots, config file in configs/)
METHODS = {
    "amdim": ("AMDIM", "amdim_cifar10_cpu.py"),
    "dim_local": ("DIM(L)", "dim_local.py"),
    "dim_global": ("DIM(G)", "dim_global.py"),
    "cpc": ("CPC", "cpc.py"),
}
STATE_FILE = "compare_state.json"
FOREVER_EPOCHS = 10 ** 6  # with a time budget, max_seconds ends the run, not the epoch count

_METHODS = flags.DEFINE_list("methods", list(METHODS), f"Methods to compare, from {list(METHODS)}.")
_AMDIM_VARIANT = flags.DEFINE_string(
    "amdim_variant", "parity", "Variant of configs/amdim_cifar10_cpu.py (parity: 5.0M-parameter "
    "encoder of the official reference setup; '' the same encoder; small: 1.1M).")
_DIM_VARIANT = flags.DEFINE_string(
    "dim_variant", "", "Variant of configs/dim_local.py and dim_global.py ('' DIM's own 4.9M "
    "encoder; amdim: AMDIM's encoder at ndf 128, 20M, for a same-encoder comparison).")
_CPC_VARIANT = flags.DEFINE_string("cpc_variant", "", "Variant of configs/cpc.py ('' is its only size).")
_VARIANT = flags.DEFINE_string("variant", "", "If set, the variant of every method (e.g. tiny for tests).")
_DATA_SOURCE = flags.DEFINE_string("data_source", "npz", "config.data.source of every method "
                                   "(npz | tfds | folder | tfrecord | digits).")
_DATA_PATH = flags.DEFINE_string("data_path", "../shared/data/cifar10/cifar10-jpeg.npz",
                                 "config.data.path of every method (relative to the working directory).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "config.data.image_size and model.image_size.")
_SECONDS = flags.DEFINE_integer("seconds", 600, "Pretraining wall-clock budget per method "
                                "(config.train.max_seconds); 0 = no time limit (then set --steps).")
_STEPS = flags.DEFINE_integer("steps", 0, "Pretraining steps per method, rounded up to whole "
                              "--eval_every intervals; 0 = until --seconds run out.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 100, "Steps between online eval probe points "
                                   "(sets config.train.steps_per_epoch).")
_EVAL_STEPS = flags.DEFINE_integer("eval_steps", 4, "Batches of config.train.eval_batch_size in "
                                   "each online eval (0 = the whole eval split).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Pretraining batch of every method (0 = each "
                                   "config's own).")
_SET = flags.DEFINE_multi_string(
    "set", [], "KEY=VALUE config override for every method, or METHOD:KEY=VALUE for one, "
    "e.g. --set=cpc:model.ndf=64 --set=seed=2. Applied last.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/compare", "Each method runs in WORKDIR/<method>.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a method's run whose config differs "
                               "(otherwise that is refused).")
_MAX_TRAIN = flags.DEFINE_integer("max_train", 10000, "Train examples used to fit the frozen classifiers.")
_K = flags.DEFINE_integer("k", 20, "Neighbours of the cosine kNN.")


def load_config(method, variant):
    path = os.path.join(_common.ROOT, "configs", METHODS[method][1])
    spec = importlib.util.spec_from_file_location(f"compare_config_{method}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant or None)


def apply_set(config, method, item):
    """Applies one --set item; returns False if it is addressed to another method."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise ValueError(f"--set={item!r} is not KEY=VALUE")
    target, colon, rest = key.partition(":")
    if colon:
        if target not in METHODS:
            raise ValueError(f"--set={item!r}: {target!r} is not a method of {list(METHODS)}")
        if target != method:
            return False
        key = rest
    *parents, leaf = key.strip().split(".")
    section = config
    try:
        for p in parents:
            section = section[p]
        current = section[leaf]
    except (KeyError, AttributeError):
        raise ValueError(f"--set={item!r}: no key {key!r} in the {method} config") from None
    if isinstance(current, str):
        value = raw
    else:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
    try:
        section[leaf] = value
    except TypeError as e:
        raise ValueError(f"--set={item!r}: {e}") from None
    return True


def method_config(method):
    variant = _VARIANT.value or {"amdim": _AMDIM_VARIANT, "cpc": _CPC_VARIANT}.get(
        method, _DIM_VARIANT).value
    c = load_config(method, variant)
    c.data.source = _DATA_SOURCE.value
    c.data.path = _DATA_PATH.value
    if _DATA_SOURCE.value == "digits":
        c.data.name = "digits"
    c.data.image_size = c.model.image_size = _IMAGE_SIZE.value
    c.data.augment = ""  # the preset of the image size
    if _BATCH_SIZE.value:
        c.train.batch_size = _BATCH_SIZE.value
    c.train.eval_steps = _EVAL_STEPS.value
    c.optim.decay_epochs = ()
    if _STEPS.value:
        c.train.steps_per_epoch = min(_EVAL_EVERY.value, _STEPS.value)
        c.train.epochs = math.ceil(_STEPS.value / c.train.steps_per_epoch)
    else:
        c.train.steps_per_epoch = _EVAL_EVERY.value
        c.train.epochs = FOREVER_EPOCHS
    for item in _SET.value:
        apply_set(c, method, item)
    name = f"configs/{METHODS[method][1]}" + (f":{variant}" if variant else "")
    return c, name


def _read_json(path, default):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return default


def _write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)  # atomic: a kill never leaves half a state file


def _checkpoint_step(workdir):
    import tensorflow as tf  # noqa: PLC0415
    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else -1


def _count(variables):
    import numpy as np  # noqa: PLC0415
    return sum(int(np.prod(v.shape)) for v in variables)


def run_method(method, config, config_name):
    """Pretrains (or resumes) one method, evaluates its frozen encoder; returns its row."""
    from amdim_tf import evaluate, plots  # noqa: PLC0415
    from amdim_tf.run_io import load_trained_encoder  # noqa: PLC0415
    from amdim_tf.train import PREEMPTED_EXIT_CODE, prepare_workdir, train  # noqa: PLC0415

    label = METHODS[method][0]
    wd = os.path.join(_WORKDIR.value, method)
    state_path = os.path.join(wd, STATE_FILE)
    state = _read_json(state_path, {"pretrain_seconds": 0.0})
    budget, target = _SECONDS.value, config.train.steps_per_epoch * config.train.epochs
    # Refuse another run's workdir before deciding that its budget is spent.
    prepare_workdir(config, wd, _OVERWRITE.value)
    if not os.path.exists(os.path.join(wd, "checkpoints")):
        state = {"pretrain_seconds": 0.0}  # new or overwritten run
    metrics = os.path.join(wd, "metrics.jsonl")
    logged = plots.active_seconds([r["time"] for r in plots.read_metrics(metrics) if "time" in r]) \
        if os.path.exists(metrics) else []
    # The metrics' active time also counts an invocation killed before it saved the state.
    spent = max(state["pretrain_seconds"], logged[-1] if logged else 0.0)
    step = _checkpoint_step(wd)
    done = step >= 0 and ((budget and spent >= budget) or step >= target)
    encoder = None
    if not done:
        remaining = budget - spent if budget else 0
        config.train.max_seconds = int(math.ceil(remaining))
        print(f"\n== {label}: {config_name}, pretraining "
              + (f"{remaining:.0f} s" if budget else "") + (" or " if budget and _STEPS.value else "")
              + (f"to step {target}" if _STEPS.value else "") + f" in {wd}", flush=True)
        t0 = time.time()
        model, result = train(config, wd, overwrite=_OVERWRITE.value)
        state["pretrain_seconds"] = spent + time.time() - t0
        state["encoder_params"] = _count(model.encoder.trainable_variables)
        _write_json(state_path, state)
        if result["status"] == "preempted":
            print(f"{label} preempted; re-run the same command to continue.")
            sys.exit(PREEMPTED_EXIT_CODE)
        encoder, step = model.encoder, int(model.optimizer.iterations.numpy())
    else:
        print(f"\n== {label}: budget spent ({spent:.0f} s, step {step}) in {wd}; not training again.")

    key = {"step": step, "max_train": _MAX_TRAIN.value, "k": _K.value}
    cached = state.get("eval")
    if not cached or {k: cached.get(k) for k in key} != key or "encoder_params" not in state:
        if encoder is None:
            encoder, _ = load_trained_encoder(config, wd)
        rows = evaluate.evaluate_encoders(config, {label: encoder}, pixels=False,
                                          max_train=_MAX_TRAIN.value, k=_K.value)
        state["eval"] = {**key, **{k: rows[0][k] for k in ("linear_acc", "knn_acc", "n_train", "n_test")}}
        state["encoder_params"] = _count(encoder.trainable_variables)
        _write_json(state_path, state)
    speeds = [r["perf/images_per_sec"] for r in plots.read_metrics(metrics) if "perf/images_per_sec" in r] \
        if os.path.exists(metrics) else []
    return {"method": method, "model": label, "config": config_name,
            "encoder_params": state["encoder_params"], "batch_size": config.train.batch_size,
            "images_per_sec": statistics.median(speeds) if speeds else None, "steps": step,
            "pretrain_seconds": state["pretrain_seconds"], **state["eval"]}


def pixel_row(config):
    """Raw pixels through the same protocol, cached in WORKDIR/pixels.json per data and settings."""
    from amdim_tf import evaluate  # noqa: PLC0415
    path = os.path.join(_WORKDIR.value, "pixels.json")
    key = {"source": config.data.source, "path": config.data.path, "image_size": config.data.image_size,
           "max_train": _MAX_TRAIN.value, "k": _K.value}
    cached = _read_json(path, {})
    if cached.get("key") != key:
        row = evaluate.evaluate_encoders(config, {}, pixels=True, max_train=_MAX_TRAIN.value, k=_K.value)[0]
        cached = {"key": key, "row": row}
        _write_json(path, cached)
    return {"method": "pixels", **cached["row"]}


def format_markdown(rows, budget_line):
    k = _K.value
    lines = ["| method | config | encoder parameters | batch | images/s (median) | steps | "
             f"pretraining time | frozen linear acc | kNN acc (cosine, k={k}) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] == "pixels":
            lines.append(f"| raw pixels | - | - | - | - | - | - | {100 * r['linear_acc']:.1f}% | "
                         f"{100 * r['knn_acc']:.1f}% |")
            continue
        speed = f"{r['images_per_sec']:.0f}" if r["images_per_sec"] else "-"
        lines.append(f"| {r['model']} | `{r['config']}` | {r['encoder_params']:,} | "
                     f"{r['batch_size']} | {speed} | {r['steps']} | {r['pretrain_seconds']:.0f} s | "
                     f"{100 * r['linear_acc']:.1f}% | {100 * r['knn_acc']:.1f}% |")
    return "\n".join(lines) + "\n\n" + budget_line + "\n"


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        _common.fail(f"unexpected arguments {argv[1:]}; every option is a --flag (see --help).")
    unknown = [m for m in _METHODS.value if m not in METHODS]
    if unknown or not _METHODS.value:
        _common.fail(f"--methods={','.join(_METHODS.value)}: unknown {unknown}; choose from "
                     f"{','.join(METHODS)}", code=1)
    if _SECONDS.value <= 0 and _STEPS.value <= 0:
        _common.fail("--seconds=0 and --steps=0 leave no budget; set one of them.", code=1)
    if _EVAL_EVERY.value <= 0:
        _common.fail(f"--eval_every={_EVAL_EVERY.value} must be positive.", code=1)

    def run():
        import gc  # noqa: PLC0415

        from amdim_tf import plots  # noqa: PLC0415

        configs = {m: method_config(m) for m in _METHODS.value}  # all config errors before any training
        os.makedirs(_WORKDIR.value, exist_ok=True)
        rows = []
        for m, (config, name) in configs.items():
            rows.append(run_method(m, config, name))
            gc.collect()  # the finished method's model is no longer referenced
        first = next(iter(configs.values()))[0]
        rows.append(pixel_row(first))

        r0 = rows[0]
        budget = " or ".join(([f"{_SECONDS.value} s of wall time"] if _SECONDS.value else [])
                             + ([f"{_STEPS.value} steps"] if _STEPS.value else []))
        data = (f"{first.data.source}" + (f" {first.data.path}" if first.data.source != "digits" else "")
                + f" at {first.data.image_size} px")
        budget_line = (f"Pretraining budget per method: {budget} (whichever ends first; the time "
                       f"includes model build and the online evals every {_EVAL_EVERY.value} steps). "
                       f"Data: {data}. Frozen protocol: r1 features, logistic regression and cosine "
                       f"kNN fitted on {r0['n_train']} train images, scored on {r0['n_test']} eval "
                       "images. Images/s counts both views of each pair.")
        table = format_markdown(rows, budget_line)
        with open(os.path.join(_WORKDIR.value, "compare.md"), "w") as f:
            f.write("# Self-supervised methods under one budget\n\n" + table)
        _write_json(os.path.join(_WORKDIR.value, "compare.json"),
                    {"budget": {"seconds": _SECONDS.value, "steps": _STEPS.value,
                                "eval_every": _EVAL_EVERY.value},
                     "data": {"source": first.data.source, "path": first.data.path,
                              "image_size": first.data.image_size},
                     "max_train": _MAX_TRAIN.value, "k": _K.value, "rows": rows})
        series = {}
        for r in rows[:-1]:
            metrics = os.path.join(_WORKDIR.value, r["method"], "metrics.jsonl")
            series[r["model"]] = plots.curves_from_metrics(metrics) if os.path.exists(metrics) else []
        png = plots.plot_probe_curves(series, os.path.join(_WORKDIR.value, "compare.png"),
                                      f"Online linear probe on the eval split, {data}")
        print()
        print(table)
        print(f"wrote {os.path.join(_WORKDIR.value, 'compare.md')}, compare.json and {png}")

    _common.run_main(run)


if __name__ == "__main__":
    app.run(main, flags_parser=_common.parse_flags)
