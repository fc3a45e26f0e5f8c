"""A run's checkpoints: what is saved, where, how to find the newest readable one, and
how to read parts of it back.

`RunCheckpoint` saves the model, optimizer(s), RNG states and epoch together (object
paths `model/encoder/...`, `optimizer/...`, which existing runs rely on) through
tf.train.CheckpointManager, whose state file is replaced atomically only after a
checkpoint's files are complete. What a kill leaves is mended here before any manager
opens a folder (`repair_checkpoint_folder`): half-written `ckpt-N_temp*` folders go,
a missing or garbled state file is rebuilt from the `ckpt-N` files on disk. A newer
checkpoint that cannot be read (a disk filled, a copy cut short) is skipped with a
warning by every reader alike (`newest_readable`).

`restore_parts` is the one restore of named sub-modules (the Model Garden way): every
variable is set to NaN first and must be read from the checkpoint, so a mismatched
architecture fails loudly instead of evaluating random weights.
"""

import glob
import os
import re
import shutil

import keras
import tensorflow as tf
from absl import logging

from amdim_tf import compat, durable
from amdim_tf.errors import UserError, cause

_CKPT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")
# A mixed_float16 run wraps its optimizer in a LossScaleOptimizer, which nests the
# optimizer's state one level down in the checkpoint's object graph.
_WRAPPED = "optimizer/inner_optimizer/"


def checkpoint_numbers(folder: str) -> list:
    """The N of every ckpt-N.index in `folder`, ascending (what is on disk, state file aside)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in map(_CKPT_INDEX.match, names) if m)


def _read_state(folder):
    """The CheckpointState of `folder`, or None if its state file is missing or garbled
    (TF returns None for most damage, but raises on bytes that are not UTF-8)."""
    try:
        return tf.train.get_checkpoint_state(folder)
    except (tf.errors.OpError, ValueError, UnicodeDecodeError):
        return None


def checkpoint_candidates(folder: str) -> list:
    """Checkpoint prefixes of `folder`, oldest first: those its state file lists, or, if
    that file is missing, garbled or lists none that exist, the ckpt-N files on disk."""
    state = _read_state(folder)
    listed = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path and state.model_checkpoint_path not in listed:
        listed.append(state.model_checkpoint_path)
    if any(tf.io.gfile.exists(p + ".index") for p in listed):
        return listed
    return [os.path.join(folder, f"ckpt-{n}") for n in checkpoint_numbers(folder)]


def repair_checkpoint_folder(folder: str) -> None:
    """After a kill: removes half-written `ckpt-N_temp*` folders, and rebuilds a missing or
    garbled state file from the checkpoints on disk (so no later save overwrites them)."""
    if not os.path.isdir(folder):
        return
    for temp in glob.glob(os.path.join(folder, "*_temp*")):
        logging.warning("Removing %s, a checkpoint write that did not finish.", temp)
        if os.path.isdir(temp):
            shutil.rmtree(temp, ignore_errors=True)
        else:
            os.remove(temp)
    state = _read_state(folder)
    listed = list(state.all_model_checkpoint_paths) if state else []
    if any(tf.io.gfile.exists(p + ".index") for p in listed):
        return
    numbers = checkpoint_numbers(folder)
    if not numbers:
        return
    logging.warning(
        "The checkpoint state file of %s is missing or unreadable; rebuilt it from the "
        "checkpoints on disk (ckpt-%s).",
        folder,
        ", ckpt-".join(map(str, numbers)),
    )
    # CheckpointManager rotates out (max_to_keep) only the checkpoints whose timestamp
    # is later than last_preserved_timestamp; without timestamps it would keep every
    # rebuilt one forever. Their files' times, and a preserved time before them all,
    # put them back in its rotation.
    times = [os.path.getmtime(os.path.join(folder, f"ckpt-{n}.index")) for n in numbers]
    lines = [f'model_checkpoint_path: "ckpt-{numbers[-1]}"']
    lines += [f'all_model_checkpoint_paths: "ckpt-{n}"' for n in numbers]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in times]
    lines += [f"last_preserved_timestamp: {min(times) - 1.0!r}"]
    durable.write_text(os.path.join(folder, "checkpoint"), "\n".join(lines) + "\n")


# What reading a checkpoint cut short (disk full, a killed copy) raises.
_UNREADABLE = (tf.errors.OpError, AssertionError, ValueError, IndexError, RuntimeError)


def _read_every_tensor(path):
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)


def newest_readable(folder: str, read=_read_every_tensor):
    """The newest checkpoint in `folder` that `read(path)` reads without raising, or None.

    Each newer one that fails is skipped with a warning: training's resume (which reads
    into the model) and evaluate/export (which read every tensor) fall back alike.
    """
    for path in reversed(checkpoint_candidates(folder)):
        try:
            read(path)
        except _UNREADABLE as e:
            why = cause(e)
            logging.warning("Checkpoint %s is unreadable (%s); trying the previous one.", path, why)
            continue
        return path
    return None


def checkpoint_path(workdir: str, which: str = "latest") -> str:
    """The newest readable checkpoint of `workdir` ("latest" or "best"); a truncated newer
    one is skipped with a warning, as training's resume does."""
    if which not in ("latest", "best"):
        raise UserError(f"which={which!r}; expected 'latest' or 'best'.")
    folder = os.path.join(workdir, "checkpoints" if which == "latest" else "best")
    candidates = checkpoint_candidates(folder)
    if not candidates:
        raise FileNotFoundError(
            f"no checkpoint in {folder}; train first (amdim-train "
            f"--workdir={workdir}) or pick --which=latest."
        )
    path = newest_readable(folder)
    if path is not None:
        return path
    raise FileNotFoundError(
        f"none of the checkpoints in {folder} is readable (a disk filled or a copy cut "
        "short?); restore them from a backup, or train again."
    )


def restore_parts(path: str, **parts) -> None:
    """Reads sub-modules of a run checkpoint's model (`model/<name>/...`) into `parts`.

    Every variable of every part is first set to NaN, so one that the checkpoint does
    not hold (another architecture, or a layer hidden from tf.train) is caught rather
    than left at its random initial value.

    Args:
        path: a checkpoint prefix written by `RunCheckpoint`.
        **parts: name -> built Keras layer, e.g. encoder=..., objective=...
    """
    holder = tf.Module()
    variables = []
    for name, part in parts.items():
        setattr(holder, name, part)
        variables += list(part.variables)
    for v in variables:
        v.assign(tf.fill(v.shape, float("nan")))
    status = tf.train.Checkpoint(model=holder).read(path)
    status.expect_partial()
    status.assert_existing_objects_matched()
    missing = [v.path for v in variables if bool(tf.reduce_all(tf.math.is_nan(v)))]
    if missing:
        raise UserError(
            f"checkpoint {path} holds no value for {len(missing)} variables of "
            f"{'/'.join(parts)} (e.g. {missing[0]}); it was written by a different "
            "architecture or code version. Read it with the config and code that trained it."
        )


def _unwrapped(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def _wrapped(optimizer):
    """`optimizer` where a LossScaleOptimizer's checkpoint keeps its inner optimizer."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    holder = tf.Module()
    holder.inner_optimizer = optimizer
    return holder


class RunCheckpoint:
    """Model, optimizer(s), RNG states and position, saved and restored together.

    Restores read `workdir`. `write_dir` (multi-worker, non-chief tasks) redirects
    saves: every worker must save, since saving may run collectives, but only the
    chief's copy in `workdir` is kept (the TF multi-worker guide's scheme).

    A checkpoint of either precision family resumes the other: a mixed_float16 run's
    optimizer state sits under a LossScaleOptimizer (`optimizer/inner_optimizer/...`),
    a float32 / bfloat16 run's directly under `optimizer/`; `restore` reads whichever
    layout the checkpoint has (the loss scale starts afresh when it had none).
    """

    def __init__(self, model, workdir: str, keep: int, write_dir: str = None):
        self.model = model
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Keras SeedGenerators are not tf.train-trackable: bind their state
        # variables by position (the model's structure fixes the order).
        self._rng = {f"rng_{i}": v.value for i, v in enumerate(compat.seed_generator_states(model))}
        self.ckpt = tf.train.Checkpoint(**self._objects(lambda opt: opt))
        self.manager = self.best_manager = None
        self.write_manager = self.best_write_manager = None
        if workdir:
            if not write_dir:  # the process that owns the workdir mends it first
                for name in ("checkpoints", "best"):
                    repair_checkpoint_folder(os.path.join(workdir, name))
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

    def _objects(self, optimizer_as) -> dict:
        model = self.model
        objects = dict(
            model=model, optimizer=optimizer_as(model.optimizer), epoch=self.epoch, rng=self._rng
        )
        if model.auxiliary_optimizer is not None:
            # Keep the key "adversary_optimizer" (its name before the auxiliary hook):
            # checkpoints of existing DIM runs store the discriminator's optimizer there.
            objects["adversary_optimizer"] = optimizer_as(model.auxiliary_optimizer)
        return objects

    def _read(self, path: str) -> None:
        saved_wrapped = any(n.startswith(_WRAPPED) for n, _ in tf.train.list_variables(path))
        ours_wrapped = isinstance(self.model.optimizer, keras.optimizers.LossScaleOptimizer)
        if saved_wrapped == ours_wrapped:
            self.ckpt.read(path).assert_existing_objects_matched()
            return
        logging.warning(
            "Checkpoint %s was written %s a LossScaleOptimizer (precision mixed_float16); "
            "reading its optimizer state into this run's.",
            path,
            "with" if saved_wrapped else "without",
        )
        # The optimizer is reached twice in the checkpoint's graph (root.optimizer and
        # root.model.optimizer), so both edges must lead to the stand-in of the other
        # layout while reading; the model's attribute is put back afterwards.
        as_saved = _wrapped if saved_wrapped else _unwrapped
        model, originals = self.model, (self.model.optimizer, self.model.auxiliary_optimizer)
        try:
            model.optimizer = as_saved(originals[0])
            if originals[1] is not None:
                model.auxiliary_optimizer = as_saved(originals[1])
            status = tf.train.Checkpoint(**self._objects(lambda opt: opt)).read(path)
            status.expect_partial()  # the loss scale of a wrapped checkpoint has no home here
            status.assert_existing_objects_matched()
        finally:
            model.optimizer, model.auxiliary_optimizer = originals

    @property
    def step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def save(self, epoch: int, manager=None) -> str:
        manager = manager or self.write_manager
        if manager.latest_checkpoint and manager.latest_checkpoint.endswith(f"-{self.step}"):
            return manager.latest_checkpoint  # this step is saved already
        self.epoch.assign(epoch)
        return manager.save(checkpoint_number=self.step)

    def restore(self, init_checkpoint: str = "") -> str:
        """Resume precedence: latest readable checkpoint here, then init weights, then scratch.

        Returns a short description of where the run starts from."""
        if self.manager is not None:
            path = newest_readable(self.manager.directory, self._read)
            if path is not None:
                return f"resumed from {path} at step {self.step}"
            if checkpoint_candidates(self.manager.directory):
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
