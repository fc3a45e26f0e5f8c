"""A run's identity: its resolved config.json, which changes keep it the same run, and
how an old config.json is read today.

`prepare_workdir` writes config.json (atomically) and refuses a work directory that
holds another run; changes of the `RESUMABLE_CHANGES` keys (a longer run, a lower lr,
another precision) resume it and are appended to config_history.jsonl with the step
they start at. `load_run_config` reads config.json back, completed with
`ADDED_KEY_DEFAULTS` for keys added to the code after the run was written.
"""

import json
import os
import time

import ml_collections
from absl import logging

from amdim_tf import config_lib
from amdim_tf.durable import append_jsonl, write_json
from amdim_tf.errors import UserError, cause
from amdim_tf.run.checkpoints import checkpoint_numbers
from amdim_tf.run.workdir import (
    CONFIG_FILE,
    HISTORY_FILE,
    WorkdirConflictError,
    make_workdir,
    remove_run_outputs,
)

# Keys that may change between runs of one work directory without making it another
# run: how long to train (the schedule's boundaries are fixed epochs), and how to
# log, evaluate and checkpoint.
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.verbose",
    "train.max_seconds",
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.eval_steps",
    "train.eval_batch_size",
    "train.log_view_pairs",
    "train.knn_examples",
    "train.health_examples",
    "train.collapse_rank_fraction",
    "train.stop_on_collapse",
    "train.visualize_every_steps",
    # How the same global batch is computed: a checkpoint is strategy- and
    # policy-free (variables stay float32 under the mixed policies; RunCheckpoint
    # reads a LossScaleOptimizer's state into a plain optimizer and back).
    "distribute",
    "precision",
    "jit_compile",
    "train.steps_per_execution",
    # The learning-rate schedule: the fix StopOnNonFiniteLoss advises (a lower lr)
    # must resume. The schedule is a function of the step, not checkpointed state, so
    # the new values take effect from the resumed step on; config_history.jsonl
    # records the step and the change.
    "optim.lr",
    "optim.warmup_steps",
    "optim.decay_epochs",
    "optim.decay_factor",
    "optim.schedule",
)
# Keys added after runs were started: a config.json without them had these values.
ADDED_KEY_DEFAULTS = {
    "distribute": "default",
    "precision": "float32",
    "jit_compile": False,
    "train.steps_per_execution": 1,
    "optim.schedule": "step",
    "data.max_pixels": 2**25,
}


def _config_dict(config):
    return json.loads(config.to_json_best_effort())


def _diff(old, new, prefix=""):
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _with_added_defaults(resolved):
    """A config.json dict, completed with the values its run had for keys added since."""
    data = resolved.get("data")
    if isinstance(data, dict) and "labels" not in data:
        # Before data.labels, the folder source read sub-directories as classes.
        data["labels"] = "folders" if data.get("source") == "folder" else "none"
    for dotted, value in ADDED_KEY_DEFAULTS.items():
        *parents, key = dotted.split(".")
        section = resolved
        for p in parents:
            section = section.setdefault(p, {})
        section.setdefault(key, value)
    return resolved


def _merged(defaults, values):
    """`values` over `defaults`, section by section (nested dicts)."""
    out = dict(defaults)
    for k, v in values.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a training run wrote to WORKDIR/config.json.

    Completed once, here: keys added to the code after the run was written get the
    value that run had (ADDED_KEY_DEFAULTS), then today's defaults for anything else.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: --workdir must be a directory written by amdim-train"
        )
    try:
        with open(path) as f:
            resolved = _with_added_defaults(json.load(f))
    except (ValueError, UnicodeDecodeError) as e:  # a garbled file: the user restores it
        raise UserError(
            f"{path} is not valid JSON ({cause(e)}); restore it from a copy, or train "
            "again in a new --workdir."
        ) from None
    return ml_collections.ConfigDict(_merged(config_lib.base_config().to_dict(), resolved))


def _run_changes(old, new):
    """Differences between two resolved configs that make them different runs."""
    # Keys added to the code since `old` was written take the value its run had
    # (ADDED_KEY_DEFAULTS) or else today's default, which keeps the old behaviour
    # (e.g. model.n_mix = 0): neither makes the resumed run another run.
    completed = _merged(_config_dict(config_lib.base_config()), _with_added_defaults(old))
    return [c for c in _diff(completed, new) if c.split(":")[0] not in RESUMABLE_CHANGES]


def _read_config_json(path, overwrite):
    """The dict in an existing config.json; None if absent (or garbled and overwriting)."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        if overwrite:
            return None
        raise WorkdirConflictError(
            f"{path} is not valid JSON ({cause(e)}); restore it, or pass "
            "--overwrite to delete this workdir's run and start again."
        ) from None


def _has_checkpoint(workdir):
    return any(checkpoint_numbers(os.path.join(workdir, d)) for d in ("checkpoints", "best"))


def prepare_workdir(
    config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False, write: bool = True
) -> str:
    """Creates `workdir` and writes config.json; refuses a workdir of a different run.

    A work directory whose run never wrote a checkpoint holds nothing to resume, so
    it takes a new config (its run's outputs are removed): a start that failed (a
    typo in data.path) does not lock the directory. Resumable changes (a longer run,
    a lower lr) are appended to config_history.jsonl with the step they start at.
    write=False (multi-worker, non-chief, or a check before the data is opened) only
    checks, so every worker fails alike."""
    path = os.path.join(workdir, CONFIG_FILE)
    new = _config_dict(config)
    old = _read_config_json(path, overwrite)
    changes = _run_changes(old, new) if old is not None else []
    if changes and not overwrite and _has_checkpoint(workdir):
        raise WorkdirConflictError(
            f"{workdir} holds a different run's config ({'; '.join(changes[:3])}"
            f"{'; ...' if len(changes) > 3 else ''}); use a new --workdir, or pass "
            "--overwrite to delete that run and start again."
        )
    if not write:
        return workdir
    make_workdir(workdir)
    if changes or (overwrite and old is None and os.path.exists(path)):
        how = "Overwriting" if overwrite else "Taking the new config for (no checkpoint yet)"
        logging.warning("%s the run in %s (%s).", how, workdir, "; ".join(changes))
        remove_run_outputs(workdir)
    elif old is not None:
        resumed = _diff(_with_added_defaults(old), new)
        if resumed:
            numbers = checkpoint_numbers(os.path.join(workdir, "checkpoints"))
            record = {"step": numbers[-1] if numbers else 0, "time": time.time()}
            record["changes"] = resumed
            append_jsonl(os.path.join(workdir, HISTORY_FILE), record)
    write_json(path, new)  # a crash never leaves a half-written config
    return workdir
