"""What a user sees of a pretraining run while it runs: progress that tells the truth.

Keras's own progress (`fit(verbose=...)`) counts an epoch as whole when `fit` leaves it:
a run stopped at step 47 of 300 printed `300/300 - 162s - 541ms/step`, and a log file
got nothing within an epoch for minutes. `TrainProgress` counts the steps the optimiser
took, so a stopped epoch says 47/300 and its real time per step, and off a terminal it
writes a line at least every `every_seconds` within an epoch. Its ETA comes from the
measured steady pace: the first step of each `fit` call (tracing, the input pipeline's
first fill) is timed but left out of the rate. `announce_signal` says at once what a
Ctrl-C waits for, while the step it landed in still runs.
"""

import contextlib
import signal
import socket
import sys
import threading
import time

import keras

# train.verbose as the user sets it: 0 silent, 1 live progress, 2 a line per epoch.
OFF, LIVE, EPOCHS = 0, 1, 2
# The longest silence within an epoch when the output is not a terminal (a log file).
LINE_EVERY_SECONDS = 30.0


def duration(seconds: float) -> str:
    """A span of time as a person reads it: '47 s', '2.7 min', '1.5 h'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def per_step(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms/step" if seconds < 1 else f"{seconds:.1f} s/step"


def is_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def _logs(logs) -> str:
    return " - ".join(f"{k}: {float(v):.4g}" for k, v in sorted((logs or {}).items()))


class TrainProgress(keras.callbacks.Callback):
    """Epoch and step progress of `fit`, counted in optimiser steps (resume-aware).

    Args:
        steps_per_epoch: steps in a whole epoch (a resumed fit's first epoch runs fewer).
        epochs: epochs of the whole run.
        verbose: train.verbose: 0 nothing, 1 live progress (a redrawn line on a terminal,
            else a line every `every_seconds`), 2 a line per epoch.
        stream: where to write (default sys.stdout, looked up at each write).
        every_seconds: the longest silence within an epoch off a terminal (default
            LINE_EVERY_SECONDS).
    """

    def __init__(self, steps_per_epoch, epochs, verbose=LIVE, stream=None, every_seconds=None):
        super().__init__()
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.verbose = int(verbose)
        self._stream = stream
        self.every_seconds = float(LINE_EVERY_SECONDS if every_seconds is None else every_seconds)
        self._epoch = 0
        self._epoch_began = None  # (time, step) when this process entered the epoch
        self._steady = None  # (time, step) at the end of this fit's first step
        self._last_line = 0.0
        self._redrawn = False

    @property
    def stream(self):
        return self._stream or sys.stdout

    def _write(self, text, end="\n"):
        if self._redrawn and end == "\n":
            text = "\n" + text  # close the live line before a line of record
        self.stream.write(text + end)
        self.stream.flush()
        self._redrawn = end == ""

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self._steady = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        now = time.perf_counter()
        self._epoch_began = (now, self._step())
        self._last_line = now
        if self.verbose != OFF:
            self._write(f"Epoch {epoch + 1}/{self.epochs}")

    def eta(self, now, step, target) -> float | None:
        """Seconds until `target` at the pace measured since this fit's first step."""
        if self._steady is None or step <= self._steady[1]:
            return None
        t0, s0 = self._steady
        return (now - t0) / (step - s0) * (target - step)

    def on_train_batch_end(self, batch, logs=None):
        now, step = time.perf_counter(), self._step()
        if self._steady is None:
            self._steady = (now, step)
        if self.verbose != LIVE:
            return
        live = is_terminal(self.stream)
        if not live and now - self._last_line < self.every_seconds:
            return
        self._last_line = now
        epoch_end = (self._epoch + 1) * self.steps_per_epoch
        t0, s0 = self._epoch_began
        eta = self.eta(now, step, epoch_end)
        parts = [
            f"step {step - self._epoch * self.steps_per_epoch}/{self.steps_per_epoch} "
            f"of epoch {self._epoch + 1}",
            duration(now - t0),
            per_step((now - t0) / max(step - s0, 1)),
        ]
        if eta is not None:
            parts.append(f"ETA {duration(eta)}")
        if logs and "loss/total" in logs:
            parts.append(f"loss/total: {float(logs['loss/total']):.4g}")
        if live:
            self._write("\r" + " - ".join(parts) + "\033[K", end="")
        else:
            self._write("  " + " - ".join(parts))

    def on_epoch_end(self, epoch, logs=None):
        if self.verbose == OFF:
            return
        now, step = time.perf_counter(), self._step()
        t0, s0 = self._epoch_began
        done = step - epoch * self.steps_per_epoch
        line = (
            f"{done}/{self.steps_per_epoch} - {duration(now - t0)} - "
            f"{per_step((now - t0) / max(step - s0, 1))}"
        )
        if logs:
            line += " - " + _logs(logs)
        if done < self.steps_per_epoch:
            line += f" (stopped at step {step} of {self.epochs * self.steps_per_epoch})"
        self._write(line)


@contextlib.contextmanager
def announce_signal(signum, message, stream=None):
    """Writes `message` the moment `signum` first arrives, from a watcher thread.

    Python runs signal handlers in the main thread between bytecodes, so a Ctrl-C that
    lands in a training step (minutes on a large preset) is handled when the step ends:
    until then the user would see nothing and might press again, which skips the
    checkpoint. The C-level handler writes the signal number to the wakeup fd at once,
    and TensorFlow releases the GIL while a step runs, so the watcher can speak. The
    previous wakeup fd is restored on exit; off the main thread this does nothing.
    """
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        reader.close()
        writer.close()
        yield
        return

    def watch():
        with contextlib.suppress(OSError):
            while data := reader.recv(64):
                if signum in data:
                    out = stream or sys.stderr
                    out.write(message + "\n")
                    out.flush()
                    return

    watcher = threading.Thread(target=watch, name="announce-signal", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        writer.close()  # the watcher's recv returns b"" and it ends
        watcher.join(timeout=5)
        reader.close()
