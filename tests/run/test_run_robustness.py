"""A run survives careless and hostile use (issue 13): kills at any moment, damaged
files, two runs on one workdir, a full or read-only disk, Ctrl-C, a changed lr.

Each test reproduces one report and fails on the code before its fix. The goal
test at the end kills a tiny run (kill -9) at random moments and checks that the
reruns end at the same final checkpoint as an uninterrupted run.
"""

import contextlib
import errno
import fcntl
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, run_command, run_tool
from conftest import tiny_run_config as tiny

from amdim_tf import cli
from amdim_tf.run import callbacks, checkpoints, loader
from amdim_tf.run import train as train_lib
from amdim_tf.run.build import build_model
from amdim_tf.run.run_config import load_run_config, prepare_workdir
from amdim_tf.run.workdir import workdir_storage_error as storage_error


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny run (3 steps, a checkpoint at every step), trained once; tests copy it."""
    wd = str(tmp_path_factory.mktemp("finished") / "run")
    c = tiny()
    c.train.checkpoint_every_steps = 1
    train_lib.train(c, wd)
    return wd


@pytest.fixture
def run_copy(finished_run, tmp_path):
    wd = str(tmp_path / "run")
    shutil.copytree(finished_run, wd)
    return wd


def ckpt_numbers(wd, folder="checkpoints"):
    """The N of every ckpt-N on disk, whatever the state file says."""
    names = glob.glob(os.path.join(wd, folder, "ckpt-*.index"))
    return sorted(int(os.path.basename(n)[5:-6]) for n in names)


@contextlib.contextmanager
def held_lock(wd):
    """The work directory's lock, taken as another process would (flock on WORKDIR/.lock)."""
    os.makedirs(wd, exist_ok=True)
    with open(os.path.join(wd, ".lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if held
        f.truncate(0)
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
        f.flush()
        yield


def one_line_error(capsys, fn):
    """What `cli.run_main(fn)` prints: exactly one `error:` line (and exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(fn)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# 1. A missing or garbled checkpoint state file.
@pytest.mark.parametrize("damage", ["deleted", "garbage text", "garbage bytes"])
def test_damaged_state_file_resumes_from_the_checkpoints_on_disk(run_copy, damage):
    state = os.path.join(run_copy, "checkpoints", "checkpoint")
    if damage == "deleted":
        os.remove(state)
    elif damage == "garbage text":
        Path(state).write_text("model_checkpoint_path: {{{ not a proto")
    else:
        Path(state).write_bytes(b"\x00\xff\xfe\x80garbage")
    on_disk = ckpt_numbers(run_copy)
    model = build_model(tiny(), 3, 10)
    start = checkpoints.RunCheckpoint(model, run_copy, 3).restore()
    assert start.endswith(f"ckpt-{on_disk[-1]} at step {on_disk[-1]}"), start
    assert int(model.optimizer.iterations) == on_disk[-1]
    assert ckpt_numbers(run_copy) == on_disk  # nothing deleted or overwritten
    assert tf.train.latest_checkpoint(os.path.join(run_copy, "checkpoints")).endswith(
        f"ckpt-{on_disk[-1]}"
    )  # the state file is whole again, so later saves rotate, not overwrite


# 3. In-training eval on the first N images of a class-sorted eval split.
def _class_sorted_npz(path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.argsort(digits.target, kind="stable")
    images = np.repeat(np.repeat(digits.images[order], 4, 1), 4, 2)  # 32x32
    images = (images * 255 / 16).astype(np.uint8)[..., None].repeat(3, -1)
    jpegs = [tf.io.encode_jpeg(im).numpy() for im in images]
    arrays = {}
    for split in ("train", "test"):
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(jpegs), np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(j) for j in jpegs]).astype(np.int64)
        arrays[f"{split}_labels"] = digits.target[order].astype(np.int32)
    np.savez(path, **arrays)


def test_in_training_eval_samples_every_class(tmp_path, monkeypatch):
    npz = str(tmp_path / "sorted.npz")
    _class_sorted_npz(npz)
    c = tiny()
    c.data.source, c.data.path = "npz", npz
    seen = {}

    class Captured(Exception):
        pass

    def spy_evaluate(self, x=None, *args, **kwargs):  # the epoch-end eval of the run
        seen["labels"] = np.concatenate([y.numpy() for _, y in x])
        raise Captured

    monkeypatch.setattr(keras.Model, "evaluate", spy_evaluate)
    with pytest.raises(Captured):
        train_lib.train(c, str(tmp_path / "run"))
    labels = seen["labels"]
    n = c.train.eval_steps * c.train.eval_batch_size
    assert len(labels) == n
    counts = np.bincount(labels, minlength=10)
    assert counts.min() >= n // 10, counts  # balanced, not the first classes of the file


# 6. Two trainings on one workdir.
def test_second_run_on_a_locked_workdir_is_refused(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "metrics.jsonl").write_text('{"step": 1}\n')
    with held_lock(str(wd)):  # flock: another open of .lock conflicts, in this process too
        for extra in ([], ["--overwrite", "--config.model.ndf=16"]):
            r = run_command("train", f"--config={TINY}", f"--workdir={wd}", *extra)
            assert r.returncode == 2, r.stderr[-2000:]
            assert "Traceback" not in r.stderr
            assert f"pid {os.getpid()} on host {socket.gethostname()}" in r.stderr, r.stderr
            assert (wd / "metrics.jsonl").exists()  # --overwrite deleted nothing
            assert not (wd / "config.json").exists()


def test_workdir_lock_is_held_for_the_run_and_released_when_it_fails(tmp_path, monkeypatch):
    wd = str(tmp_path / "run")

    def check_then_fail(data):
        with pytest.raises(BlockingIOError), held_lock(wd):  # the run holds it
            pass
        raise ValueError("data.path has a typo")

    monkeypatch.setattr(train_lib.data_lib, "num_classes", check_then_fail)
    with pytest.raises(ValueError, match="typo"):
        train_lib.train(tiny(), wd)
    with held_lock(wd):  # and gave it up on the way out
        pass


# 7. Non-finite loss, then the advised fix: a lower lr, resumed.
def test_lower_lr_after_a_non_finite_loss_resumes(tmp_path):
    wd = str(tmp_path / "run")
    c = tiny()
    c.train.checkpoint_every_steps = 1

    class NanAtStep2(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == 2:
                stop = callbacks.StopOnNonFiniteLoss()
                stop.set_model(self.model)
                stop.on_train_batch_end(batch, {"loss/total": np.nan})

    with pytest.raises(callbacks.NonFiniteLossError, match="lower --config.optim.lr"):
        train_lib.train(c, wd, extra_callbacks=[NanAtStep2()])
    old_lr = c.optim.lr
    c.optim.lr = old_lr / 10
    model, res = train_lib.train(c, wd)
    assert "at step 2" in res["start"] and res["status"] == "completed"
    # Past the 2 warm-up steps the schedule gives the base lr: the new one.
    assert float(model.optimizer.learning_rate) == pytest.approx(c.optim.lr)
    assert load_run_config(wd).optim.lr == pytest.approx(c.optim.lr)
    history = [
        json.loads(line) for line in Path(wd, "config_history.jsonl").read_text().splitlines()
    ]
    assert history[-1]["step"] == 2
    assert history[-1]["changes"] == [f"optim.lr: {old_lr!r} -> {c.optim.lr!r}"]


# 9. Resume, evaluation and export on a truncated latest checkpoint.
def test_resume_export_and_evaluate_fall_back_from_a_truncated_checkpoint(run_copy, caplog):
    latest = tf.train.latest_checkpoint(os.path.join(run_copy, "checkpoints"))
    data_file = glob.glob(latest + ".data-*")[0]
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    step = ckpt_numbers(run_copy)[-2]
    previous = f"ckpt-{step}"
    assert checkpoints.checkpoint_path(run_copy).endswith(previous)
    assert loader.open_encoder(run_copy).source == previous
    assert os.path.basename(latest) in caplog.text and "unreadable" in caplog.text
    model = build_model(tiny(), 3, 10)
    start = checkpoints.RunCheckpoint(model, run_copy, 3).restore()
    assert start == f"resumed from {os.path.join(run_copy, 'checkpoints', previous)} at step {step}"


# 10. --overwrite leaves the old run's TensorBoard curves.
def test_overwrite_deletes_the_old_event_files(run_copy):
    for sub in ("train", "validation"):
        os.makedirs(os.path.join(run_copy, sub))
        Path(run_copy, sub, "events.out.tfevents.1.host").write_bytes(b"x")
    assert glob.glob(os.path.join(run_copy, "events.out.tfevents.*"))
    c = tiny()
    c.model.ndf = 16
    prepare_workdir(c, run_copy, overwrite=True)
    assert not glob.glob(os.path.join(run_copy, "**", "events.out.tfevents.*"), recursive=True)
    assert not os.path.exists(os.path.join(run_copy, "checkpoints"))


# 11. A kill between an epoch's checkpoint and its eval.
def test_kill_before_an_epoch_eval_evaluates_it_on_resume(tmp_path):
    wd = str(tmp_path / "run")
    c = tiny()
    c.train.checkpoint_every_steps = 1

    class Killed(Exception):
        pass

    class KillAtEval(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            raise Killed

    with pytest.raises(Killed):
        train_lib.train(c, wd, extra_callbacks=[KillAtEval()])
    assert ckpt_numbers(wd)[-1] == 3 and not ckpt_numbers(wd, "best")
    _, res = train_lib.train(c, wd)
    assert "at step 3" in res["start"]
    assert ckpt_numbers(wd, "best") == [3]
    best = json.loads(Path(wd, "best.json").read_text())
    assert best["evaluated_epoch"] == 1 and best["step"] == 3
    evals = [r for r in map(json.loads, Path(wd, "metrics.jsonl").read_text().splitlines())]
    evals = [r for r in evals if "probe/eval_linear_acc" in r]
    assert [(r["step"], r["epoch"]) for r in evals] == [(3, 0)]
    # Done now: a further rerun evaluates nothing again.
    train_lib.train(c, wd)
    assert len(Path(wd, "metrics.jsonl").read_text().splitlines()) == 3 + 1


# 12. A failed start locks the workdir to its typo.
def test_failed_start_does_not_lock_the_workdir_to_its_config(tmp_path):
    wd = str(tmp_path / "run")
    bad = tiny()
    bad.data.source, bad.data.path = "npz", "/nonexistent/x.npz"
    with pytest.raises(FileNotFoundError):
        train_lib.train(bad, wd)
    assert not os.path.exists(os.path.join(wd, "config.json"))
    prepare_workdir(tiny(), wd)  # the corrected rerun is this workdir's run
    # A run that never reached a checkpoint holds nothing to resume: a new config is taken.
    other = tiny()
    other.model.ndf = 16
    prepare_workdir(other, wd)
    assert json.loads(Path(wd, "config.json").read_text())["model"]["ndf"] == 16


# 14. Raw tracebacks for a workdir that cannot be written.
def test_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "a_file"
    path.write_text("x")
    line = one_line_error(capsys, lambda: train_lib.train(tiny(), str(path)))
    assert str(path) in line and "is a file" in line


def test_read_only_workdir_is_one_line(run_copy, capsys):
    if subprocess.run(["chattr", "+i", run_copy], capture_output=True).returncode:
        pytest.skip("chattr +i (an immutable directory) is not available here")
    try:
        line = one_line_error(capsys, lambda: train_lib.train(tiny(), run_copy))
    finally:
        subprocess.run(["chattr", "-i", run_copy], check=True)
    assert run_copy in line and "writable" in line, line


def test_disk_full_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    wd = str(tmp_path / "run")
    metrics = os.path.join(wd, "metrics.jsonl")

    def full(self, step, scalars):
        raise OSError(errno.ENOSPC, "No space left on device", metrics)

    monkeypatch.setattr(callbacks.MetricsLogger, "write", full)
    line = one_line_error(capsys, lambda: train_lib.train(tiny(), wd))
    assert metrics in line and "disk is full" in line and "MiB free" in line, line
    # TensorFlow's own writes (checkpoints) report the same condition as an OpError.
    ckpt = os.path.join(wd, "checkpoints", "ckpt-2_temp", "part-00000-of-00001.data")
    e = tf.errors.ResourceExhaustedError(None, None, f"{ckpt}; No space left on device")
    assert f"cannot write {ckpt} (" in str(storage_error(e, wd))
    assert storage_error(tf.errors.ResourceExhaustedError(None, None, "OOM"), wd) is None


# 15. Ctrl-C wrote no checkpoint.
class CtrlC(keras.callbacks.Callback):
    def __init__(self, at_step, times):
        super().__init__()
        self.at_step, self.times = at_step, times

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.at_step:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs between bytecodes


def test_ctrl_c_checkpoints_and_a_second_one_aborts(tmp_path):
    c = tiny()
    c.train.epochs = 3
    c.train.checkpoint_every_steps = 100
    before = signal.getsignal(signal.SIGINT)
    wd = str(tmp_path / "once")
    # The controller runs before this callback: it sees the signal at the next step.
    try:
        _, res = train_lib.train(c, wd, extra_callbacks=[CtrlC(at_step=1, times=1)])
    except KeyboardInterrupt:  # fail this test, not the whole pytest session
        pytest.fail("one Ctrl-C aborted the run instead of checkpointing and stopping")
    assert res["status"] == "interrupted"
    assert ckpt_numbers(wd) == [2]
    assert signal.getsignal(signal.SIGINT) is before  # restored
    wd = str(tmp_path / "twice")
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(c, wd, extra_callbacks=[CtrlC(at_step=1, times=2)])
    assert ckpt_numbers(wd) == []
    with held_lock(wd):  # released on the way out
        pass


# 16. A torn metrics.jsonl line, and checkpoint temp folders left by a kill.
def test_torn_metrics_line_and_temp_folders_are_repaired(run_copy):
    with open(os.path.join(run_copy, "metrics.jsonl"), "a") as f:
        f.write('{"step": 4, "epoch": 1, "loss/tot')
    temp = os.path.join(run_copy, "checkpoints", "ckpt-4_temp_0123abcd")
    os.makedirs(temp)
    Path(temp, "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
    c = tiny()
    c.train.checkpoint_every_steps = 1
    c.train.epochs = 2
    train_lib.train(c, run_copy)
    records = [
        json.loads(line) for line in Path(run_copy, "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records if "loss/total" in r] == [1, 2, 3, 4, 5, 6]
    assert not glob.glob(os.path.join(run_copy, "checkpoints", "*_temp*"))


# Issue 21, 1. A precision change to or from mixed_float16 is the same run.
@pytest.mark.parametrize(
    "before,after", [("float32", "mixed_float16"), ("mixed_float16", "float32")]
)
def test_precision_change_to_and_from_mixed_float16_resumes(tmp_path, before, after):
    """A LossScaleOptimizer nests the optimizer's state one level down in the checkpoint;
    the resume must read it across that change (it refused every checkpoint before)."""
    wd = str(tmp_path / "run")
    c = tiny()
    c.precision = before
    model = build_model(c, 3, 10)
    rng = np.random.default_rng(0)
    for v in checkpoints._unwrapped(model.optimizer).variables:
        if v.dtype == "float32":
            v.assign(rng.normal(size=v.shape).astype("float32"))
    model.optimizer.iterations.assign(7)
    checkpoints.RunCheckpoint(model, wd, 3).save(1)
    saved = [v.numpy() for v in checkpoints._unwrapped(model.optimizer).variables]

    c.precision = after
    resumed = build_model(c, 3, 10)
    start = checkpoints.RunCheckpoint(resumed, wd, 3).restore()
    assert start.startswith("resumed") and int(resumed.optimizer.iterations) == 7, start
    got = [v.numpy() for v in checkpoints._unwrapped(resumed.optimizer).variables]
    assert len(got) == len(saved)
    for i, (a, b) in enumerate(zip(got, saved, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"optimizer variable {i}")
    for a, b in zip(model.encoder.variables, resumed.encoder.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


# Issue 21, 8. A disk-full TF error names the device, not a path.
def test_disk_full_without_a_path_names_the_workdir_and_its_free_space(tmp_path):
    wd = str(tmp_path / "run")
    os.makedirs(wd)
    e = tf.errors.ResourceExhaustedError(
        None,
        None,
        "{{function_node __wrapped__SaveV2}} /job:localhost/replica:0/task:0/device:CPU:0: "
        "No space left on device [Op:SaveV2]",
    )
    line = str(storage_error(e, wd))
    assert line.startswith(f"cannot write {wd} (") and "MiB free there" in line, line
    assert "/job" not in line


# Issue 21, 16. Checkpoints listed by a rebuilt state file rotate out like any other.
def test_checkpoints_of_a_rebuilt_state_file_are_rotated_out(tmp_path):
    folder = str(tmp_path / "checkpoints")
    ckpt = tf.train.Checkpoint(v=tf.Variable(1.0))
    manager = tf.train.CheckpointManager(ckpt, folder, max_to_keep=5)
    for n in (1, 2, 3, 4):
        manager.save(checkpoint_number=n)
    os.remove(os.path.join(folder, "checkpoint"))  # a kill, or a hand copy without it
    checkpoints.repair_checkpoint_folder(folder)
    manager = tf.train.CheckpointManager(ckpt, folder, max_to_keep=2)
    manager.save(checkpoint_number=5)
    assert ckpt_numbers(str(tmp_path), "checkpoints") == [4, 5]
    assert [os.path.basename(p) for p in manager.checkpoints] == ["ckpt-4", "ckpt-5"]


# Goal: nothing lost. kill -9 in every phase of a run; the reruns end where an uninterrupted run does.
KILL_RUN = (
    f"--config={TINY}",
    "--config.train.verbose=0",
    "--config.train.epochs=3",
    "--config.train.checkpoint_every_steps=1",
    "--config.train.log_view_pairs=0",
)


def _variables(wd):
    """Every variable of the final checkpoint, save_counter aside (it counts save calls,
    which a killed save repeats, and no training state)."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(wd, "checkpoints")))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if not name.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))
    }


@pytest.mark.slow
def test_killed_in_every_phase_a_run_ends_identical(tmp_path):
    """kill -9 lands once in each phase of a 9-step, 3-epoch run (a checkpoint at every
    step): during start-up (config, lock, repair; before any checkpoint), then a seeded
    random 0-0.2 s after checkpoint 1 (the next steps or a checkpoint write), 3 (the
    epoch-end eval and best/ update), 6 (the second epoch end: best/ replaced) and 9 (the
    last eval, best/ and the end of the run); each kill starts a new process that resumes.
    The rerun after the last kill resumes at the newest checkpoint and ends with every
    variable of the uninterrupted run's final checkpoint, every step logged once, every
    epoch evaluated once at its end, the same best/ checkpoints and no temp folder left.
    Five kills replaced 8-12 at random moments (2026-12-04): the same phases, each hit
    once. The uninterrupted reference trains in a fresh process of its own, like every
    killed one, while the kills run: trained inside pytest (whose process had already
    run other models) it once differed by one ulp in one optimizer slot."""
    reference = str(tmp_path / "reference")
    ref_log = tmp_path / "reference.log"
    ref_proc = run_tool("train.py", *KILL_RUN, f"--workdir={reference}", wait=False, log=ref_log)
    rng = random.Random(13)
    wd = str(tmp_path / "killed")
    progress = []  # the newest checkpoint after each kill
    for after in (None, 1, 3, 6, 9):
        proc = run_tool("train.py", *KILL_RUN, f"--workdir={wd}", wait=False)
        try:
            if after is None:
                time.sleep(rng.uniform(0.5, 2.0))
                assert not ckpt_numbers(wd), "the start-up kill came after a checkpoint"
            else:
                while proc.poll() is None and (ckpt_numbers(wd) or [0])[-1] < after:
                    time.sleep(0.02)
                assert proc.poll() is None, proc.stdout.read()[-2000:]
                time.sleep(rng.uniform(0.0, 0.2))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
            proc.stdout.close()
        progress.append((ckpt_numbers(wd) or [0])[-1])
    print("newest checkpoint after each kill:", progress)
    # Each kill found the run alive past its checkpoint (asserted above); most left work to do.
    assert progress == sorted(progress) and sum(step < 9 for step in progress) >= 3, progress
    r = run_tool("train.py", *KILL_RUN, f"--workdir={wd}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert ref_proc.wait(timeout=600) == 0, ref_log.read_text()[-2000:]
    # The rerun continued from the newest checkpoint, not from scratch.
    assert "resumed from" in r.stdout and f"at step {progress[-1]}" in r.stdout, r.stdout
    want, got = _variables(reference), _variables(wd)
    assert sorted(want) == sorted(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    steps = [
        json.loads(line)["step"]
        for line in Path(wd, "metrics.jsonl").read_text().splitlines()
        if "loss/total" in line
    ]
    assert steps == list(range(1, 10))  # every step logged once

    def evals(run):  # every epoch's eval, once, at its epoch end
        lines = Path(run, "metrics.jsonl").read_text().splitlines()
        return [
            (r["step"], r["epoch"]) for r in map(json.loads, lines) if "probe/eval_linear_acc" in r
        ]

    assert evals(wd) == evals(reference) == [(3, 0), (6, 1), (9, 2)]
    assert ckpt_numbers(wd, "best") == ckpt_numbers(reference, "best")
    assert not glob.glob(os.path.join(wd, "*", "*_temp*"))
