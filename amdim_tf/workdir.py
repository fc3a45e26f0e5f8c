"""A run's work directory: its config.json, resume rules, checkpoints, and reading it back.

A work directory alone resumes a run. It holds the resolved `config.json`,
`checkpoints/` (the last N, written by tf.train.CheckpointManager, whose state
file is replaced atomically only after a checkpoint's files are complete),
`best/` (the checkpoint with the best eval probe accuracy) and `best.json`,
TensorBoard event files and `metrics.jsonl`. Resume precedence: the latest
readable checkpoint in the work directory, then `config.train.init_checkpoint`
(weights only), then scratch.

Reading a run back (evaluation, export) restores the encoder alone, the Model
Garden way: only the encoder is bound, and every encoder variable must find its
value, so a mismatched architecture fails loudly instead of evaluating random
weights.
"""

import json
import os
import shutil

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from amdim_tf import compat, config_lib
from amdim_tf.encoders import build_encoder

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "best.json"


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
    # How the same global batch is computed: a checkpoint is strategy- and
    # policy-free (variables stay float32 under the mixed policies).
    "distribute",
    "precision",
    "jit_compile",
    "train.steps_per_execution",
)
# Keys added after runs were started: a config.json without them had these values.
ADDED_KEY_DEFAULTS = {
    "distribute": "default",
    "precision": "float32",
    "jit_compile": False,
    "train.steps_per_execution": 1,
}


class WorkdirConflictError(ValueError):
    """The work directory holds a different run."""


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


def load_run_config(workdir) -> ml_collections.ConfigDict:
    """The resolved config a training run wrote to WORKDIR/config.json.

    Completed once, here: keys added to the code after the run was written get the
    value that run had (ADDED_KEY_DEFAULTS), then today's defaults for anything else.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: --workdir must be a directory written by tools/train.py"
        )
    with open(path) as f:
        resolved = _with_added_defaults(json.load(f))
    return ml_collections.ConfigDict(_merged(config_lib.base_config().to_dict(), resolved))


def write_json_atomic(path, obj) -> None:
    """Writes `obj` as JSON at `path` so that a reader sees the old or the new file, never half."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_best(path) -> dict:
    """The best-checkpoint record of a run (`best.json`), or a record every accuracy beats."""
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"probe/eval_linear_acc": -1.0}


def _run_changes(old, new):
    """Differences between two resolved configs that make them different runs."""
    return [
        c for c in _diff(_with_added_defaults(old), new) if c.split(":")[0] not in RESUMABLE_CHANGES
    ]


def prepare_workdir(config, workdir, overwrite=False, write=True):
    """Creates `workdir` and writes config.json; refuses a workdir of a different run.

    write=False (multi-worker, non-chief) only checks, so every worker fails alike."""
    if not write:
        path = os.path.join(workdir, CONFIG_FILE)
        if os.path.exists(path):
            with open(path) as f:
                changes = _run_changes(json.load(f), _config_dict(config))
            if changes:
                raise WorkdirConflictError(
                    f"{workdir} holds a different run's config "
                    f"({'; '.join(changes[:3])}); use a new --workdir."
                )
        return workdir
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    new = _config_dict(config)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        changes = _run_changes(old, new)
        if changes and not overwrite:
            raise WorkdirConflictError(
                f"{workdir} holds a different run's config ({'; '.join(changes[:3])}"
                f"{'; ...' if len(changes) > 3 else ''}); use a new --workdir, or pass "
                "--overwrite to delete that run and start again."
            )
        if changes:
            logging.warning("Overwriting the run in %s (%s).", workdir, "; ".join(changes))
            for name in ("checkpoints", "best", "train", "validation", METRICS_FILE, BEST_FILE):
                target = os.path.join(workdir, name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
    write_json_atomic(path, new)  # a crash never leaves a half-written config
    return workdir


class RunCheckpoint:
    """Model, optimizer(s), RNG states and position, saved and restored together.

    Restores read `workdir`. `write_dir` (multi-worker, non-chief tasks) redirects
    saves: every worker must save, since saving may run collectives, but only the
    chief's copy in `workdir` is kept (the TF multi-worker guide's scheme).
    """

    def __init__(self, model, workdir, keep, write_dir=None):
        self.model = model
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Keras SeedGenerators are not tf.train-trackable: bind their state
        # variables by position (the model's structure fixes the order).
        rng = {f"rng_{i}": v.value for i, v in enumerate(compat.seed_generator_states(model))}
        kwargs = dict(model=model, optimizer=model.optimizer, epoch=self.epoch, rng=rng)
        if model.adversary_optimizer is not None:
            kwargs["adversary_optimizer"] = model.adversary_optimizer
        self.ckpt = tf.train.Checkpoint(**kwargs)
        self.manager = self.best_manager = None
        self.write_manager = self.best_write_manager = None
        if workdir:
            self.manager = tf.train.CheckpointManager(
                self.ckpt, os.path.join(workdir, "checkpoints"), max_to_keep=keep
            )
            self.best_manager = tf.train.CheckpointManager(
                self.ckpt, os.path.join(workdir, "best"), max_to_keep=1
            )
            self.write_manager, self.best_write_manager = self.manager, self.best_manager
            if write_dir:
                self.write_manager = tf.train.CheckpointManager(
                    self.ckpt, os.path.join(write_dir, "checkpoints"), max_to_keep=keep
                )
                self.best_write_manager = tf.train.CheckpointManager(
                    self.ckpt, os.path.join(write_dir, "best"), max_to_keep=1
                )

    @property
    def step(self):
        return int(self.model.optimizer.iterations.numpy())

    def save(self, epoch, manager=None):
        manager = manager or self.write_manager
        if manager.latest_checkpoint and manager.latest_checkpoint.endswith(f"-{self.step}"):
            return manager.latest_checkpoint  # this step is saved already
        self.epoch.assign(epoch)
        return manager.save(checkpoint_number=self.step)

    def restore(self, init_checkpoint=""):
        """Resume precedence: latest readable checkpoint here, then init weights, then scratch.

        Returns a short description of where the run starts from."""
        if self.manager is not None:
            for path in reversed(self.manager.checkpoints):
                try:
                    self.ckpt.read(path).assert_existing_objects_matched()
                except (tf.errors.OpError, AssertionError, ValueError, IndexError) as e:
                    # A checkpoint cut short (disk full, killed copy) raises one of these.
                    logging.warning(
                        "Checkpoint %s is unreadable (%s); trying the previous one.",
                        path,
                        str(e).splitlines()[0][:200],
                    )
                    continue
                return f"resumed from {path} at step {self.step}"
            if self.manager.checkpoints:
                raise FileNotFoundError(
                    f"none of the checkpoints in {self.manager.directory} is readable; move them "
                    "away to start again, or fix the files."
                )
        if init_checkpoint:
            path = init_checkpoint
            if os.path.isdir(path):
                path = tf.train.latest_checkpoint(path) or path
            if not tf.io.gfile.exists(path + ".index"):
                raise FileNotFoundError(
                    f"config.train.init_checkpoint={init_checkpoint!r} is not a checkpoint "
                    "(expected PATH.index, or a directory holding one); fix the path."
                )
            # Weights only: the optimizer, step and schedule start fresh.
            status = tf.train.Checkpoint(model=self.model).read(path)
            status.expect_partial()
            status.assert_existing_objects_matched()
            return f"initialised weights from {path}"
        return "started from scratch"


def checkpoint_path(workdir, which="latest"):
    folder = os.path.join(workdir, "checkpoints" if which == "latest" else "best")
    path = tf.train.latest_checkpoint(folder)
    if path is None:
        raise FileNotFoundError(
            f"no checkpoint in {folder}; train first (tools/train.py "
            f"--workdir={workdir}) or pick --which=latest."
        )
    return path


def restore_encoder(encoder, path):
    """Loads the encoder weights of a run checkpoint (model/encoder/...) into `encoder`.

    Every encoder variable is first set to NaN, so one that the checkpoint does
    not hold (another architecture, or a layer hidden from tf.train) is caught
    rather than left at its random initial value.
    """
    for v in encoder.variables:
        v.assign(tf.fill(v.shape, float("nan")))
    holder = tf.Module()
    holder.encoder = encoder
    status = tf.train.Checkpoint(model=holder).read(path)
    status.expect_partial()
    status.assert_existing_objects_matched()
    missing = [v.path for v in encoder.variables if bool(tf.reduce_all(tf.math.is_nan(v)))]
    if missing:
        raise ValueError(
            f"checkpoint {path} holds no value for {len(missing)} encoder variables "
            f"(e.g. {missing[0]}); it was written by a different architecture or code "
            "version. Evaluate it with the code that trained it."
        )
    return encoder


def untrained_encoder(config, seed=None):
    keras.utils.set_random_seed(config.seed if seed is None else seed)
    enc = build_encoder(config)
    size = config.model.image_size
    enc.build((None, size, size, 3))
    return enc


def load_trained_encoder(config, workdir, which="latest"):
    """(encoder, checkpoint name) of the run in `workdir`."""
    path = checkpoint_path(workdir, which)
    enc = untrained_encoder(config)
    restore_encoder(enc, path)
    return enc, os.path.basename(path)


def load_encoder_weights(config, weights):
    """The encoder of `config`, built, with the weights of a Keras .weights.h5 file."""
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            f"{weights} does not exist; pass the .weights.h5 file "
            "written by encoder.save_weights()."
        )
    if not weights.endswith(".weights.h5"):
        raise ValueError(
            f"{weights} is not a Keras '.weights.h5' file; save the "
            "encoder with encoder.save_weights('encoder.weights.h5')."
        )
    encoder = build_encoder(config)
    size = config.model.image_size
    encoder.build((None, size, size, 3))
    try:
        encoder.load_weights(weights)
    except ValueError as e:
        # Keras reports a mismatch over many lines; the first names the layer.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{weights} does not fit the encoder of this config ({first}); pass "
            "the --config (and --config.* overrides) it was trained with."
        ) from None
    return encoder
