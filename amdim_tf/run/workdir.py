"""A run's work directory: its config.json, resume rules, checkpoints, and reading it back.

A work directory alone resumes a run. It holds the resolved `config.json`,
`checkpoints/` (the last N, written by tf.train.CheckpointManager, whose state
file is replaced atomically only after a checkpoint's files are complete),
`best/` (the checkpoint with the best eval probe accuracy) and `best.json`,
TensorBoard event files and `metrics.jsonl`. Resume precedence: the latest
readable checkpoint in the work directory, then `config.train.init_checkpoint`
(weights only), then scratch.

Only one process trains in a work directory at a time (`WorkdirLock`, an
exclusive `flock` on `.lock`). What a kill can leave behind is repaired at
start (`repair_after_kill`): a missing or garbled checkpoint state file is
rebuilt from the `ckpt-N` files on disk, half-written `ckpt-N_temp*` folders are
removed, and `metrics.jsonl` loses its torn last line and the records past the
checkpoint the run resumes from (they are logged again, identically). Changes
of the resumable keys are appended to `config_history.jsonl` with the step.

Reading a run back (evaluation, export) restores the encoder alone, the Model
Garden way: only the encoder is bound, and every encoder variable must find its
value, so a mismatched architecture fails loudly instead of evaluating random
weights.
"""

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import socket
import time

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from amdim_tf import compat, config_lib
from amdim_tf.errors import first_line
from amdim_tf.methods import build_encoder

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "best.json"
HISTORY_FILE = "config_history.jsonl"
LOCK_FILE = ".lock"
# What a run wrote besides config.json (history included): --overwrite deletes these,
# and a work directory that never got to a checkpoint gives them up to a new config.
RUN_OUTPUTS = ("checkpoints", "best", "train", "validation", METRICS_FILE, BEST_FILE, HISTORY_FILE)
EVENTS_GLOB = "events.out.tfevents.*"


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
    # policy-free (variables stay float32 under the mixed policies).
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


class WorkdirConflictError(ValueError):
    """The work directory holds a different run, or another process is training in it."""


class WorkdirError(ValueError):
    """The work directory cannot be written: a file in its place, read-only, disk full."""


# errno -> what to do about it, for errors writing a work directory.
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full; free space or use a --workdir on another disk, then rerun "
    "the same command to resume",
    errno.EDQUOT: "the disk quota is exceeded; free space or use a --workdir on another disk, "
    "then rerun the same command to resume",
    errno.EROFS: "the file system is read-only; use a writable --workdir",
    errno.EACCES: "permission denied; make it writable or use another --workdir",
    errno.EPERM: "the operation is not permitted (read-only or immutable); make it writable "
    "or use another --workdir",
    errno.ENOTDIR: "a file is in the way of a directory; pass a directory as --workdir",
    errno.EEXIST: "a file is in the way of a directory; pass a directory as --workdir",
}
# The same conditions as TensorFlow reports them (checkpoint and summary writes).
_TF_MESSAGES = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
    "Operation not permitted": errno.EPERM,
    "Not a directory": errno.ENOTDIR,
}


def _free_bytes(path):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path or ".").free
    except OSError:
        return None


def storage_error(e, workdir):
    """A one-line WorkdirError for an OSError / tf.errors.OpError of writing `workdir`, or None.

    Only storage conditions are translated (disk full, read-only, a file in the way);
    anything else (a TF out-of-memory, say) is not ours to reword."""
    if isinstance(e, OSError):
        code, path = e.errno, e.filename or workdir
    elif isinstance(e, tf.errors.OpError):
        code = next((c for m, c in _TF_MESSAGES.items() if m in str(e)), None)
        found = re.search(r"(/[^\s:;,'\"]+)", str(e))
        path = found.group(1) if found else workdir
    else:
        return None
    if code not in _OS_ADVICE:
        return None
    inside = os.path.abspath(str(path)).startswith(os.path.abspath(workdir))
    if not inside and code not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return None  # e.g. a data file that cannot be read: not the workdir's doing
    free = _free_bytes(path) if code in (errno.ENOSPC, errno.EDQUOT) else None
    room = f" ({free / 2**20:.1f} MiB free there)" if free is not None else ""
    return WorkdirError(f"cannot write {path}{room}: {_OS_ADVICE[code]}.")


def make_workdir(workdir):
    """Creates `workdir`; a one-line WorkdirError if that cannot be done."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(
            f"--workdir={workdir} is a file, not a directory; pass a directory "
            "(it is created if missing)."
        )
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise storage_error(e, workdir) or e from None


class WorkdirLock:
    """An exclusive lock on a work directory for a run's lifetime (`flock` on WORKDIR/.lock).

    The lock file holds "pid host" of its holder for the message a second run gets.
    The kernel drops the lock when its process dies, even by kill -9, so a file left
    behind never blocks. The holder unlinks the file on release (still locked), and a
    taker checks that the file it locked is still the one at the path, so two runs
    can never hold locks on two different files. Not for NFS without lockd.
    """

    def __init__(self, workdir):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd = None

    def acquire(self):
        for _ in range(10):  # a holder may unlink the file between our open and flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise storage_error(e, self.path) or e from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").split()
                os.close(fd)
                pid, host = (holder + ["?", "?"])[:2]
                raise WorkdirConflictError(
                    f"{os.path.dirname(self.path)} is in use by another training run (pid "
                    f"{pid} on host {host}); wait for it to end or stop it, or use another "
                    "--workdir."
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)
        raise WorkdirConflictError(f"{self.path} keeps changing; is another run starting?")

    def release(self):
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


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
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_best(path) -> dict:
    """The best-checkpoint record of a run (`best.json`), or a record every accuracy beats.

    "evaluated_epoch" is the last epoch whose end-of-epoch eval was done: 0 for a run
    without best.json; a record written before the key existed has no such key."""
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"probe/eval_linear_acc": -1.0, "evaluated_epoch": 0}


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
            f"{path} is not valid JSON ({first_line(e, limit=100)}); restore it, or pass "
            "--overwrite to delete this workdir's run and start again."
        ) from None


def _has_checkpoint(workdir):
    return any(checkpoint_numbers(os.path.join(workdir, d)) for d in ("checkpoints", "best"))


def _remove_run_outputs(workdir):
    """Deletes what a run wrote (config.json aside), TensorBoard event files included."""
    targets = [os.path.join(workdir, name) for name in RUN_OUTPUTS]
    targets += glob.glob(os.path.join(workdir, EVENTS_GLOB))
    for target in targets:
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)


def append_jsonl(path, record) -> None:
    """Appends one JSON line in a single write, after mending a torn last line."""
    repair_jsonl_tail(path)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def prepare_workdir(config, workdir, overwrite=False, write=True):
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
        _remove_run_outputs(workdir)
    elif old is not None:
        resumed = _diff(_with_added_defaults(old), new)
        if resumed:
            numbers = checkpoint_numbers(os.path.join(workdir, "checkpoints"))
            record = {"step": numbers[-1] if numbers else 0, "time": time.time()}
            record["changes"] = resumed
            append_jsonl(os.path.join(workdir, HISTORY_FILE), record)
    write_json_atomic(path, new)  # a crash never leaves a half-written config
    return workdir


_CKPT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")


def checkpoint_numbers(folder) -> list:
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


def checkpoint_candidates(folder) -> list:
    """Checkpoint prefixes of `folder`, oldest first: those its state file lists, or, if
    that file is missing, garbled or lists none that exist, the ckpt-N files on disk."""
    state = _read_state(folder)
    listed = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path and state.model_checkpoint_path not in listed:
        listed.append(state.model_checkpoint_path)
    if any(tf.io.gfile.exists(p + ".index") for p in listed):
        return listed
    return [os.path.join(folder, f"ckpt-{n}") for n in checkpoint_numbers(folder)]


def repair_checkpoint_folder(folder) -> None:
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
    lines = [f'model_checkpoint_path: "ckpt-{numbers[-1]}"']
    lines += [f'all_model_checkpoint_paths: "ckpt-{n}"' for n in numbers]
    tmp = os.path.join(folder, "checkpoint.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(folder, "checkpoint"))


def repair_jsonl_tail(path) -> None:
    """Cuts a torn last line (a write killed midway) so the next record starts a line."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if not size:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(max(size - 65536, 0))
        tail = f.read()
        cut = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        logging.warning("Dropping the torn last line of %s (%d bytes).", path, size - cut)
        f.truncate(cut)


def trim_metrics(workdir, through_step, drop_eval_at=None) -> None:
    """metrics.jsonl as the resumed run continues it: no torn line, no unreadable line, no
    record past `through_step` (they are logged again), and no eval record at step
    `drop_eval_at` (its eval is run again)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    repair_jsonl_tail(path)
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            continue
        is_eval = any(k.startswith("probe/eval_") for k in record)
        if step <= through_step and not (is_eval and step == drop_eval_at):
            kept.append(line)
    if len(kept) != len(lines):
        logging.info(
            "metrics.jsonl: dropping %d records past step %d.", len(lines) - len(kept), through_step
        )
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.writelines(kept)
        os.replace(tmp, path)


def repair_after_kill(workdir) -> None:
    """What a killed run can leave half done, put right (the chief, holding the lock)."""
    for name in ("checkpoints", "best"):
        repair_checkpoint_folder(os.path.join(workdir, name))
    repair_jsonl_tail(os.path.join(workdir, METRICS_FILE))
    for tmp in glob.glob(os.path.join(workdir, "*.tmp")):
        os.remove(tmp)  # write_json_atomic's unfinished temp files


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
        if model.auxiliary_optimizer is not None:
            # Keep the key "adversary_optimizer" (its name before the auxiliary hook):
            # checkpoints of existing DIM runs store the discriminator's optimizer there.
            kwargs["adversary_optimizer"] = model.auxiliary_optimizer
        self.ckpt = tf.train.Checkpoint(**kwargs)
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
            path = newest_readable(
                self.manager.directory,
                lambda p: self.ckpt.read(p).assert_existing_objects_matched(),
            )
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


# What reading a checkpoint cut short (disk full, a killed copy) raises.
_UNREADABLE = (tf.errors.OpError, AssertionError, ValueError, IndexError, RuntimeError)


def _read_every_tensor(path):
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)


def newest_readable(folder, read=_read_every_tensor):
    """The newest checkpoint in `folder` that `read(path)` reads without raising, or None.

    Each newer one that fails is skipped with a warning: training's resume (which reads
    into the model) and evaluate/export (which read every tensor) fall back alike.
    """
    for path in reversed(checkpoint_candidates(folder)):
        try:
            read(path)
        except _UNREADABLE as e:
            why = first_line(e, limit=200)
            logging.warning("Checkpoint %s is unreadable (%s); trying the previous one.", path, why)
            continue
        return path
    return None


def checkpoint_path(workdir, which="latest"):
    """The newest readable checkpoint of `workdir` ("latest" or "best"); a truncated newer
    one is skipped with a warning, as training's resume does."""
    folder = os.path.join(workdir, "checkpoints" if which == "latest" else "best")
    candidates = checkpoint_candidates(folder)
    if not candidates:
        raise FileNotFoundError(
            f"no checkpoint in {folder}; train first (tools/train.py "
            f"--workdir={workdir}) or pick --which=latest."
        )
    path = newest_readable(folder)
    if path is not None:
        return path
    raise FileNotFoundError(
        f"none of the checkpoints in {folder} is readable (a disk filled or a copy cut "
        "short?); restore them from a backup, or train again."
    )


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
        first = first_line(e)
        raise ValueError(
            f"{weights} does not fit the encoder of this config ({first}); pass "
            "the --config (and --config.* overrides) it was trained with."
        ) from None
    return encoder
