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
    assert "linear" in lines[1] and "ETA" in lines[1]


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
