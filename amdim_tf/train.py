"""Pretraining runs: work directory, resume, checkpoints, TensorBoard, then Keras `fit`.

A work directory alone resumes a run. It holds the resolved `config.json`,
`checkpoints/` (the last N, written by tf.train.CheckpointManager, whose state
file is replaced atomically only after a checkpoint's files are complete),
`best/` (the checkpoint with the best eval probe accuracy), TensorBoard event
files and `metrics.jsonl`. Resume precedence: the latest readable checkpoint in
the work directory, then `config.train.init_checkpoint` (weights only), then
scratch. The data stream is a pure function of (seed, step), so a resumed run
sees exactly the batches the uninterrupted run would have.

Library code: takes a ConfigDict and explicit arguments, never absl FLAGS.
"""

import json
import os
import shutil
import signal
import time
import warnings

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from amdim_tf import augment
from amdim_tf import data as data_lib
from amdim_tf import distribute
from amdim_tf.build import build_model
from amdim_tf.model import StopOnNonFiniteLoss

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "best.json"
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect of a preempted job


# Keys that may change between runs of one work directory without making it another
# run: how long to train (the schedule's boundaries are fixed epochs), and how to
# log, evaluate and checkpoint.
RESUMABLE_CHANGES = ("train.epochs", "train.verbose", "train.max_seconds", "train.log_every_steps",
                     "train.checkpoint_every_steps", "train.keep_checkpoints",
                     "train.eval_steps", "train.eval_batch_size", "train.log_view_pairs",
                     # How the same global batch is computed: a checkpoint is strategy-free.
                     "distribute", "jit_compile", "train.steps_per_execution")
# Keys added after runs were started: a config.json without them had these values.
ADDED_KEY_DEFAULTS = {"distribute": "default", "precision": "float32", "jit_compile": False,
                      "train.steps_per_execution": 1}


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
    """A config.json dict, completed with the keys added after it was written."""
    for dotted, value in ADDED_KEY_DEFAULTS.items():
        *parents, key = dotted.split(".")
        section = resolved
        for p in parents:
            section = section.setdefault(p, {})
        section.setdefault(key, value)
    return resolved


def load_run_config(workdir):
    """The resolved config a training run wrote to WORKDIR/config.json (as a ConfigDict)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: --workdir must be a directory "
                                "written by tools/train.py")
    with open(path) as f:
        return ml_collections.ConfigDict(_with_added_defaults(json.load(f)))


def _run_changes(old, new):
    """Differences between two resolved configs that make them different runs."""
    return [c for c in _diff(_with_added_defaults(old), new)
            if c.split(":")[0] not in RESUMABLE_CHANGES]


def prepare_workdir(config, workdir, overwrite=False, write=True):
    """Creates `workdir` and writes config.json; refuses a workdir of a different run.

    write=False (multi-worker, non-chief) only checks, so every worker fails alike."""
    if not write:
        path = os.path.join(workdir, CONFIG_FILE)
        if os.path.exists(path):
            with open(path) as f:
                changes = _run_changes(json.load(f), _config_dict(config))
            if changes:
                raise WorkdirConflictError(f"{workdir} holds a different run's config "
                                           f"({'; '.join(changes[:3])}); use a new --workdir.")
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
                "--overwrite to delete that run and start again.")
        if changes:
            logging.warning("Overwriting the run in %s (%s).", workdir, "; ".join(changes))
            for name in ("checkpoints", "best", "train", "validation", METRICS_FILE, BEST_FILE):
                target = os.path.join(workdir, name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(new, f, indent=2, sort_keys=True)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written config
    return workdir


def steps_per_epoch(config):
    if config.train.steps_per_epoch:
        return int(config.train.steps_per_epoch)
    n = data_lib.num_pretrain_examples(config.data)
    steps = n // config.train.batch_size
    if steps < 1:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} is larger than the "
                         f"{n} training examples; lower the batch size.")
    return steps


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
        rng = {f"rng_{i}": v.value for i, v in enumerate(
            v for v in model.variables if "seed_generator" in v.path)}
        kwargs = dict(model=model, optimizer=model.optimizer, epoch=self.epoch, rng=rng)
        if model.adversary_optimizer is not None:
            kwargs["adversary_optimizer"] = model.adversary_optimizer
        self.ckpt = tf.train.Checkpoint(**kwargs)
        self.manager = self.best_manager = None
        self.write_manager = self.best_write_manager = None
        if workdir:
            self.manager = tf.train.CheckpointManager(
                self.ckpt, os.path.join(workdir, "checkpoints"), max_to_keep=keep)
            self.best_manager = tf.train.CheckpointManager(
                self.ckpt, os.path.join(workdir, "best"), max_to_keep=1)
            self.write_manager, self.best_write_manager = self.manager, self.best_manager
            if write_dir:
                self.write_manager = tf.train.CheckpointManager(
                    self.ckpt, os.path.join(write_dir, "checkpoints"), max_to_keep=keep)
                self.best_write_manager = tf.train.CheckpointManager(
                    self.ckpt, os.path.join(write_dir, "best"), max_to_keep=1)

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
                    logging.warning("Checkpoint %s is unreadable (%s); trying the previous one.",
                                    path, str(e).splitlines()[0][:200])
                    continue
                return f"resumed from {path} at step {self.step}"
            if self.manager.checkpoints:
                raise FileNotFoundError(
                    f"none of the checkpoints in {self.manager.directory} is readable; move them "
                    "away to start again, or fix the files.")
        if init_checkpoint:
            path = init_checkpoint
            if os.path.isdir(path):
                path = tf.train.latest_checkpoint(path) or path
            if not tf.io.gfile.exists(path + ".index"):
                raise FileNotFoundError(
                    f"config.train.init_checkpoint={init_checkpoint!r} is not a checkpoint "
                    "(expected PATH.index, or a directory holding one); fix the path.")
            # Weights only: the optimizer, step and schedule start fresh.
            status = tf.train.Checkpoint(model=self.model).read(path)
            status.expect_partial()
            status.assert_existing_objects_matched()
            return f"initialised weights from {path}"
        return "started from scratch"


class RunMonitor(keras.callbacks.Callback):
    """TensorBoard scalars, metrics.jsonl, periodic/epoch/best checkpoints and SIGTERM.

    Every scalar is written at the global step so a resumed run continues its
    curves. Tags keep the model's groups (loss/, nce/, probe/) plus perf/ and
    optim/; eval probe accuracies are probe/eval_*. With `write_logs=False` (a
    non-chief worker) nothing is written to `workdir`, but checkpoints are still
    saved (to the run_ckpt's write_dir) at the same steps as on the chief.
    """

    # Why a run stops early, as codes all workers agree on (the larger wins).
    STOP_TIME, STOP_SIGNAL = 1, 2

    def __init__(self, run_ckpt, workdir, global_batch, log_every, checkpoint_every,
                 max_seconds=0, write_logs=True, agreement=None):
        super().__init__()
        self.deadline = time.monotonic() + max_seconds if max_seconds else None
        # distribute.StopAgreement: the stop reason of all workers at this step.
        self.agreement = agreement or int
        self.stop_reason = 0   # agreed by all workers; 0 = keep training
        self._signalled = False
        self.run_ckpt = run_ckpt
        self.workdir = workdir
        self.global_batch = global_batch
        self.log_every = max(int(log_every), 1)
        self.checkpoint_every = int(checkpoint_every)
        self.write_logs = bool(workdir) and write_logs
        self.writer = tf.summary.create_file_writer(workdir) if self.write_logs else None
        self.epoch = 0
        self._last_log = None
        self._last_checkpoint_step = None
        self.best = self._load_best()

    def _load_best(self):
        path = os.path.join(self.workdir, BEST_FILE) if self.workdir else None
        if path and os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        return {"probe/eval_linear_acc": -1.0}

    @property
    def preempted(self):
        """True once the run must stop early (SIGTERM or time budget, on any worker)."""
        return self.stop_reason != 0

    @property
    def out_of_time(self):
        return self.stop_reason == self.STOP_TIME

    def request_stop(self, *_):
        # A signal handler: only note it; workers agree on the step at batch end.
        self._signalled = True

    def on_train_begin(self, logs=None):
        self._last_log = (time.perf_counter(), self.run_ckpt.step)
        self._last_checkpoint_step = self.run_ckpt.step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _write(self, step, scalars):
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for k, v in scalars.items():
                    tf.summary.scalar(k, v)
            self.writer.flush()
        if self.write_logs:
            record = {"step": step, "epoch": self.epoch, "time": time.time()}
            record.update({k: float(v) for k, v in scalars.items()})
            with open(os.path.join(self.workdir, METRICS_FILE), "a") as f:
                f.write(json.dumps(record) + "\n")

    def on_train_batch_end(self, batch, logs=None):
        step = self.run_ckpt.step
        if not self.preempted:
            local = (self.STOP_SIGNAL if self._signalled else
                     self.STOP_TIME if self.deadline is not None and time.monotonic() > self.deadline
                     else 0)
            self.stop_reason = self.agreement(local)
            if self.out_of_time:
                logging.warning("Time budget (config.train.max_seconds) reached at step %d.", step)
        # With steps_per_execution = N, this runs every N steps: act when a multiple
        # of the period was passed, not only when it is hit exactly.
        s0 = self._last_log[1]
        if logs and step // self.log_every > s0 // self.log_every:
            now = time.perf_counter()
            t0 = self._last_log[0]
            scalars = {k: float(v) for k, v in logs.items()}
            # Both views pass through the encoder: 2 images per pair.
            scalars["perf/images_per_sec"] = 2 * self.global_batch * (step - s0) / (now - t0)
            scalars["optim/lr"] = float(self.model.optimizer.learning_rate)
            self._write(step, scalars)
            self._last_log = (now, step)
        every = self.checkpoint_every
        due = every and step // every > self._last_checkpoint_step // every
        if self.run_ckpt.manager is not None and (self.preempted or due):
            self.run_ckpt.save(self.epoch)
            self._last_checkpoint_step = step
        if self.preempted:
            logging.warning("Checkpoint written at step %d; stopping (%s).", step,
                            "time budget" if self.out_of_time else "SIGTERM")
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = self.run_ckpt.step
        evals = {k.replace("val_probe/", "probe/eval_"): float(v)
                 for k, v in logs.items() if k.startswith("val_probe/")}
        if evals:
            self._write(step, evals)
        if self.run_ckpt.manager is None or self.preempted:
            return
        self.run_ckpt.save(epoch + 1)
        acc = evals.get("probe/eval_linear_acc")
        if acc is not None and acc > self.best["probe/eval_linear_acc"]:
            self.best = {"probe/eval_linear_acc": acc, "step": step, "epoch": epoch + 1}
            self.run_ckpt.save(epoch + 1, self.run_ckpt.best_write_manager)
            if not self.write_logs:
                return
            path = os.path.join(self.workdir, BEST_FILE)
            with open(path + ".tmp", "w") as f:
                json.dump(self.best, f)
            os.replace(path + ".tmp", path)


def log_view_pairs(writer, dataset, preset, n, step):
    """A TensorBoard image of the first n augmented pairs (view 1 | view 2)."""
    (v1, v2), _ = next(iter(dataset.take(1)))
    pairs = tf.concat([augment.denormalise(v1[:n], preset), augment.denormalise(v2[:n], preset)],
                      axis=2)                                             # [n, S, 2S, 3]
    with writer.as_default(step=step):
        tf.summary.image("data/view_pairs", tf.clip_by_value(pairs, 0.0, 1.0), max_outputs=n)


def pretrain_dataset(config, strategy, start_step):
    """The distributed two-view stream; config.train.batch_size is the global batch.

    One input pipeline per worker, each yielding per-replica batches that the
    strategy hands to that worker's replicas in turn, so one global step takes
    (replicas per worker) batches of each pipeline. Keras 3's `fit` (TF backend)
    takes a DistributedDataset as it is (its epoch iterator only distributes plain
    datasets), so the sharding and per-replica batching are ours, not Keras's.
    """
    global_batch = int(config.train.batch_size)

    def dataset_fn(ctx):
        replicas_per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        # start_step counts this pipeline's batches, not global steps.
        return data_lib.make_pretrain_dataset(
            config.data, ctx.get_per_replica_batch_size(global_batch), config.seed, ctx,
            start_step=start_step * replicas_per_pipeline)

    return strategy.distribute_datasets_from_function(dataset_fn)


def train(config, workdir=None, overwrite=False, callbacks=()):
    """Pretrains as `config` says, resuming from `workdir` if it holds this run.

    Returns (model, dict) with the dict holding "status" ("completed" or
    "preempted"), "start" (where the run started from) and "history" (Keras
    history dicts of the fit calls). Under config.distribute="multiworker" every
    worker calls this with the same workdir; only the chief writes to it.
    """
    # First: MultiWorkerMirroredStrategy must exist before TF runs any op.
    strategy = distribute.make_strategy(config.get("distribute", "default"))
    chief = distribute.is_chief(strategy)
    if workdir and overwrite and distribute.is_multi_worker(strategy):
        # The chief would delete checkpoints that other workers may be restoring.
        raise ValueError("--overwrite is not supported with config.distribute='multiworker'; "
                         f"delete {workdir} yourself, or use a new --workdir.")
    if workdir:
        prepare_workdir(config, workdir, overwrite, write=chief)
    keras.utils.set_random_seed(config.seed)
    spe = steps_per_epoch(config)
    epochs = int(config.train.epochs)
    batch = int(config.train.batch_size)
    if batch % strategy.num_replicas_in_sync:
        raise ValueError(f"config.train.batch_size={batch} (the global batch) must be a multiple "
                         f"of the {strategy.num_replicas_in_sync} replicas; change it.")
    num_classes = data_lib.num_classes(config.data)
    # Plain dataset: Keras distributes validation data over the replicas itself.
    eval_ds = data_lib.make_eval_dataset(config.data, config.data.eval_split,
                                         config.train.eval_batch_size)
    write_dir = None
    if workdir and not chief:
        write_dir = distribute.worker_temp_dir(strategy.cluster_resolver.task_id)
    with strategy.scope():
        model = build_model(config, spe, num_classes)
        run_ckpt = RunCheckpoint(model, workdir, config.train.keep_checkpoints, write_dir)
    start = run_ckpt.restore(config.train.init_checkpoint)
    print(f"encoder: {sum(int(np.prod(v.shape)) for v in model.encoder.trainable_variables):,} "
          f"trainable parameters; {spe} steps per epoch of {batch} pairs over "
          f"{strategy.num_replicas_in_sync} replica(s); {start}", flush=True)
    result = {"status": "completed", "start": start, "history": []}
    step = run_ckpt.step
    if step >= spe * epochs:
        logging.info("Run already complete (%d steps).", step)
        return model, result

    monitor = RunMonitor(run_ckpt, workdir, batch, config.train.log_every_steps,
                         config.train.checkpoint_every_steps, config.train.max_seconds,
                         write_logs=chief, agreement=distribute.StopAgreement(strategy))
    cbs = [StopOnNonFiniteLoss(), monitor] + list(callbacks)
    preset = config.data.augment or augment.preset_for_size(config.data.image_size)
    if monitor.writer is not None and config.train.log_view_pairs and step == 0:
        log_view_pairs(monitor.writer, data_lib.make_pretrain_dataset(config.data, batch, config.seed),
                       preset, config.train.log_view_pairs, step)

    old_handler = None
    try:
        old_handler = signal.signal(signal.SIGTERM, monitor.request_stop)
    except ValueError:  # not the main thread: preemption handling is the caller's
        pass
    try:
        epoch, done_in_epoch = divmod(step, spe)
        # A run stopped mid-epoch first finishes that epoch, so epoch ends (eval,
        # checkpoints, decay boundaries) fall on the same steps as without the stop.
        segments = []
        if done_in_epoch:
            segments.append((epoch, epoch + 1, spe - done_in_epoch))
            epoch += 1
        if epoch < epochs:
            segments.append((epoch, epochs, spe))
        for first, last, steps in segments:
            if monitor.preempted:
                break
            ds = pretrain_dataset(config, strategy, run_ckpt.step)
            with warnings.catch_warnings():
                # Keras warns "Your input ran out of data; interrupting training" at the
                # end of every pass over a dataset of unknown length: here only the eval
                # split (labels filtered), since the pretraining stream repeats forever.
                warnings.filterwarnings("ignore", message="Your input ran out of data")
                hist = model.fit(ds, initial_epoch=first, epochs=last, steps_per_epoch=steps,
                                 validation_data=eval_ds,
                                 validation_steps=config.train.eval_steps or None,
                                 callbacks=cbs, verbose=config.train.verbose if chief else 0,
                                 shuffle=False)
            result["history"].append(hist.history)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        if monitor.writer is not None:
            monitor.writer.close()
        if write_dir:
            shutil.rmtree(write_dir, ignore_errors=True)
    if monitor.out_of_time:
        result["status"] = "stopped at the time budget"
    elif monitor.preempted:
        result["status"] = "preempted"
    return model, result
