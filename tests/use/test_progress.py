"""Progress on long work (issue 20 item 9): lines with an ETA for evaluate and finetune,
one line per epoch (not a redraw per step) when training logs to a file."""

import io
import re
import types

import tensorflow as tf
from conftest import ROOT, run_command

from amdim_tf.run.loader import untrained_encoder
from amdim_tf.run.progress import TrainProgress
from amdim_tf.run.run_config import load_run_config
from amdim_tf.use import evaluate
from amdim_tf.use import progress as progress_module
from amdim_tf.use.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_progress_bar_only_on_a_terminal():
    steps = tf.Variable(0, dtype=tf.int64)
    model = types.SimpleNamespace(optimizer=types.SimpleNamespace(iterations=steps))
    outputs = {}
    for name, stream in (("terminal", _Terminal()), ("file", io.StringIO())):
        progress = TrainProgress(10, 1, 1, stream)
        progress.set_model(model)
        progress.on_epoch_begin(0)
        for step in range(1, 4):
            steps.assign(step)
            progress.on_train_batch_end(step - 1, {"loss/total": 1.0})
        progress.on_epoch_end(0, {})
        outputs[name] = stream.getvalue()
    assert outputs["terminal"].count("\r") == 3  # redrawn in place at every step
    assert "\r" not in outputs["file"] and "  step " not in outputs["file"]  # < 30 s


def test_progress_lines_say_what_and_how_long_is_left():
    out = io.StringIO()
    progress = Progress(3, out)
    for arm in ("frozen", "finetune", "scratch"):
        progress.start(arm)
        progress.done("50.0%")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/3] frozen ..."
    assert re.fullmatch(r"\[1/3\] frozen: 50\.0% \(0 s, 0 s in all; ETA 0 s\)", lines[1])
    assert lines[-1].startswith("[3/3] scratch: 50.0%") and "ETA" not in lines[-1]


def test_evaluate_shows_each_model(tiny_run, capsys):
    config = load_run_config(tiny_run)
    encoders = {"untrained": untrained_encoder(config)}
    evaluate.evaluate_encoders(config, encoders, pixels=True, max_train=100, verbose=1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[1/2] raw pixels ..." and lines[2] == "[2/2] untrained ..."
    assert "linear" in lines[1] and lines[1].endswith("; ETA after the first encoder)")


def test_a_training_log_file_has_a_line_per_epoch_not_per_step(tmp_path):
    proc = run_command(  # stdout is not a terminal here, as in a log file
        "train",
        f"--config={ROOT}/configs/amdim_digits_demo.py:tiny",
        f"--workdir={tmp_path / 'run'}",
        "--config.train.verbose=1",
        "--config.train.epochs=2",
        "--config.train.steps_per_epoch=4",
        "--config.train.log_view_pairs=0",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\b" not in proc.stdout and "\r" not in proc.stdout
    epoch_lines = [line for line in proc.stdout.splitlines() if re.match(r"\d+/\d+ - ", line)]
    assert len(epoch_lines) == 2, proc.stdout[-2000:]


def test_an_eta_comes_from_units_of_the_same_kind(monkeypatch):
    """finetune printed 'ETA 4 s' after a 1 s frozen arm, before a 95 s fine-tuning arm:
    an ETA counts each kind of unit at its own measured time, and none is given while
    a kind still to come has not run once."""
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])
    out = io.StringIO()
    arms = {"frozen": 1.0, "finetune": 95.0, "scratch": 90.0}
    progress = Progress(6, out, kinds=list(arms) * 2)
    for arm, seconds in list(arms.items()) * 2:
        progress.start(arm)
        clock[0] += seconds
        progress.done("50.0%")
    done = [line for line in out.getvalue().splitlines() if not line.endswith("...")]
    assert done[0].endswith("(1 s, 1 s in all; ETA after the first finetune)"), done[0]
    assert done[1].endswith("; ETA after the first scratch)"), done[1]
    # 1 + 95 + 90 s left, each kind at its measured time.
    assert done[2].endswith("(90 s, 3.1 min in all; ETA 3.1 min)"), done[2]
    assert done[3].endswith("; ETA 3.1 min)"), done[3]  # 95 + 90 s
    assert done[4].endswith("; ETA 90 s)"), done[4]
    assert "ETA" not in done[5]
