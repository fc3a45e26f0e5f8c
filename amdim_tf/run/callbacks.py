"""What runs beside Keras `fit` during pretraining: logs, checkpoints, and when to stop.

- `StopOnNonFiniteLoss`: a clear error at the first NaN/inf loss.
- `StopController`: SIGTERM, Ctrl-C (SIGINT), the wall-clock budget, and the
  agreement of all workers on the step to stop at.
- `EpochEndEvaluation`: the eval split and the monitors at each epoch end, skipped
  at a stop so that it takes a step, not an evaluation.
- `MetricsLogger`: TensorBoard scalars and `metrics.jsonl`, at the global step.
- `Checkpointer`: periodic, end-of-epoch, best-by-eval and on-stop checkpoints;
  best.json records the last epoch whose eval was done, so a run killed between
  an epoch's checkpoint and its eval evaluates that epoch when resumed.

Pass them to `fit` in that order: the logger and the checkpointer read the
controller's decision for the same step. Every scalar is written at the global
step, so a resumed run continues its curves.
"""

import os
import signal
import time

import keras
import tensorflow as tf
from absl import logging

from amdim_tf.durable import append_jsonl, write_json
from amdim_tf.errors import UserError
from amdim_tf.run.workdir import METRICS_FILE, read_best

EVAL_LINEAR_KEY = "probe/eval_linear_acc"


class NonFiniteLossError(UserError, FloatingPointError):
    """Raised when the training loss becomes NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with a clear error at the first step whose loss is NaN/inf.

    Keras' TerminateOnNaN stops silently; users need the step and the likely
    causes. `loss/total` is the running mean of the epoch, so it turns
    non-finite at the first bad step and stays so.
    """

    def __init__(self, key="loss/total"):
        super().__init__()
        self.key = key

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.key)
        if value is None:
            return
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            # The bad step's update was skipped, so `iterations` counts the good steps.
            step = int(self.model.optimizer.iterations.numpy()) + 1
            raise NonFiniteLossError(
                f"{self.key} became {value} at training step {step} (batch {batch} of this epoch). "
                "Training stopped before applying that step, so the weights are the last finite "
                "ones and no checkpoint is written from a bad state. Likely causes: a "
                "learning rate too high for the batch size, tclip disabled, or NaN/inf pixels in "
                "the input data. Rerun the same command with a lower --config.optim.lr (or "
                "fixed data): it resumes from the last checkpoint with the new learning rate."
            )


def eval_scalars(logs) -> dict:
    """The eval-probe accuracies of an epoch's logs, under their TensorBoard tags."""
    return {
        k.replace("val_probe/", "probe/eval_"): float(v)
        for k, v in (logs or {}).items()
        if k.startswith("val_probe/")
    }


class StopController(keras.callbacks.Callback):
    """Decides, after every step, whether the run must stop early, and why.

    A SIGTERM or SIGINT (`request_stop` is the signal handler) or the time budget
    ends the run at the next step end (`fit` stops after the other callbacks saw
    that step, so the checkpointer saves it). Under multi-worker training every
    worker must stop at the same step, so the local reason goes through
    `agreement` (`distribute.StopAgreement`), which returns the largest reason of
    all workers.
    """

    # Why a run stops early, as codes all workers agree on (the larger wins).
    STOP_TIME, STOP_SIGNAL, STOP_INTERRUPT = 1, 2, 3

    def __init__(self, max_seconds=0, agreement=None):
        super().__init__()
        self.deadline = time.monotonic() + max_seconds if max_seconds else None
        self.agreement = agreement or int
        self.stop_reason = 0  # agreed by all workers; 0 = keep training
        self.signalled = None  # the signal number received, if any

    @property
    def preempted(self) -> bool:
        """True once the run must stop early (SIGTERM or time budget, on any worker)."""
        return self.stop_reason != 0

    @property
    def out_of_time(self) -> bool:
        return self.stop_reason == self.STOP_TIME

    @property
    def interrupted(self) -> bool:
        """True when the stop is a Ctrl-C (SIGINT) rather than a scheduler's SIGTERM."""
        return self.stop_reason == self.STOP_INTERRUPT

    def request_stop(self, signum=signal.SIGTERM, frame=None):
        # A signal handler: only note it; workers agree on the step at batch end.
        del frame
        self.signalled = signum

    def on_train_batch_end(self, batch, logs=None):
        if self.preempted:
            return
        if self.signalled == signal.SIGINT:
            local = self.STOP_INTERRUPT
        elif self.signalled is not None:
            local = self.STOP_SIGNAL
        elif self.deadline is not None and time.monotonic() > self.deadline:
            local = self.STOP_TIME
        else:
            local = 0
        self.stop_reason = self.agreement(local)
        if self.preempted:
            step = int(self.model.optimizer.iterations.numpy())
            why = {
                self.STOP_TIME: "time budget (config.train.max_seconds)",
                self.STOP_SIGNAL: "SIGTERM",
                self.STOP_INTERRUPT: "Ctrl-C (SIGINT)",
            }[self.stop_reason]
            # The checkpointer saves this step next; the epoch-end evaluations are skipped.
            logging.warning("Stopping at step %d: %s; writing its checkpoint.", step, why)
            # Takes effect after every callback has seen this step (the checkpointer saves it).
            self.model.stop_training = True


class EpochEndEvaluation(keras.callbacks.Callback):
    """The epoch-end evaluations: the eval split (as `fit`'s validation would, its
    results added to the epoch's logs as val_*), then each monitor's `on_epoch_end`
    (the kNN, the health monitors), all skipped when `stopper` stops the run.

    A stop (Ctrl-C, SIGTERM, the time budget) must end within a step of the request:
    these passes took longer than the step itself (47 s after a Ctrl-C on a folder run),
    and the checkpoint of the stop step is already written at that batch end. A stop
    on an epoch's last step leaves best.json's evaluated_epoch behind the checkpoint,
    so the resumed run evaluates that epoch first (`train._evaluate_epoch`).

    Args:
        eval_ds: the eval set (None: no eval split).
        monitors: callbacks whose on_epoch_end runs after the eval, with its logs.
        stopper: a `StopController`.
        eval_callbacks: `fit`'s other callbacks, given to the evaluation as `fit` gives
            them to its validation (on_test_*).
    """

    def __init__(self, eval_ds, monitors, stopper=None, eval_callbacks=()):
        super().__init__()
        self.eval_ds = eval_ds
        self.monitors = [m for m in monitors if m is not None]
        self.stopper = stopper
        self.eval_callbacks = eval_callbacks

    def set_model(self, model):
        super().set_model(model)
        for monitor in self.monitors:
            monitor.set_model(model)

    def on_epoch_end(self, epoch, logs=None):
        if self.stopper is not None and self.stopper.preempted:
            return
        logs = {} if logs is None else logs
        if self.eval_ds is not None:
            results = self.model.evaluate(
                self.eval_ds, verbose=0, return_dict=True, callbacks=list(self.eval_callbacks)
            )
            logs.update({f"val_{k}": v for k, v in results.items()})
        for monitor in self.monitors:
            monitor.on_epoch_end(epoch, logs)


class MetricsLogger(keras.callbacks.Callback):
    """TensorBoard scalars and metrics.jsonl every `log_every` steps, eval accuracies per epoch.

    Tags keep the model's groups (loss/, nce/, probe/) plus perf/images_per_sec
    and optim/lr; eval probe accuracies are probe/eval_*. With `workdir=None`
    (a non-chief worker) nothing is written.
    """

    def __init__(self, workdir, global_batch, log_every):
        super().__init__()
        self.workdir = workdir
        self.global_batch = global_batch
        self.log_every = max(int(log_every), 1)
        self.writer = tf.summary.create_file_writer(workdir) if workdir else None
        self.epoch = 0
        self._last = None  # (time, step) of the last record

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self._last = (time.perf_counter(), self._step())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def write(self, step, scalars):
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for k, v in scalars.items():
                tf.summary.scalar(k, v)
        self.writer.flush()
        record = {"step": step, "epoch": self.epoch, "time": time.time()}
        record.update({k: float(v) for k, v in scalars.items()})
        append_jsonl(os.path.join(self.workdir, METRICS_FILE), record, sort_keys=False)

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        t0, s0 = self._last
        # With steps_per_execution = N, this runs every N steps: act when a multiple
        # of the period was passed, not only when it is hit exactly.
        if not logs or step // self.log_every <= s0 // self.log_every:
            return
        now = time.perf_counter()
        scalars = {k: float(v) for k, v in logs.items()}
        # Both views pass through the encoder: 2 images per pair.
        scalars["perf/images_per_sec"] = 2 * self.global_batch * (step - s0) / (now - t0)
        scalars["optim/lr"] = float(self.model.optimizer.learning_rate)
        self.write(step, scalars)
        self._last = (now, step)

    def on_epoch_end(self, epoch, logs=None):
        evals = eval_scalars(logs)
        if evals:
            self.write(self._step(), evals)

    def close(self):
        if self.writer is not None:
            self.writer.close()


class Checkpointer(keras.callbacks.Callback):
    """Checkpoints every `every` steps, at every epoch end, for the best eval accuracy,
    and at the step where `stopper` (a `StopController`) stops the run.

    After each epoch's eval, best.json gets "evaluated_epoch" (written last, atomically):
    a checkpoint at an epoch end whose best.json says less was killed before its eval.

    `run_ckpt` is a `checkpoints.RunCheckpoint`; on a non-chief worker its saves go to a
    scratch directory (saving may run collectives, so every worker saves) and
    `best_file` is None.
    """

    def __init__(self, run_ckpt, every, stopper, best_file=None):
        super().__init__()
        self.run_ckpt = run_ckpt
        self.every = int(every)
        self.stopper = stopper
        self.best_file = best_file
        self.best = read_best(best_file)
        self.epoch = 0
        self._last_step = None

    def on_train_begin(self, logs=None):
        self._last_step = self.run_ckpt.step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self.run_ckpt.step
        due = self.every and step // self.every > self._last_step // self.every
        if self.stopper.preempted or due:
            self.run_ckpt.save(self.epoch)
            self._last_step = step

    def on_epoch_end(self, epoch, logs=None):
        if self.stopper.preempted:
            return
        self.run_ckpt.save(epoch + 1)
        acc = eval_scalars(logs).get(EVAL_LINEAR_KEY)
        if acc is None:
            return
        if acc > self.best[EVAL_LINEAR_KEY]:
            self.best = {EVAL_LINEAR_KEY: acc, "step": self.run_ckpt.step, "epoch": epoch + 1}
            self.run_ckpt.save(epoch + 1, self.run_ckpt.best_write_manager)
        self.best["evaluated_epoch"] = epoch + 1
        if self.best_file:
            write_json(self.best_file, self.best)
