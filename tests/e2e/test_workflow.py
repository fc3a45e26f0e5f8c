"""The user's workflow: tools, work directory, TensorBoard/metrics, checkpoints and resume."""

import glob
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, latest_step, run_command, run_tool

from amdim_tf.run import train as train_lib
from amdim_tf.run.build import build_model
from amdim_tf.run.checkpoints import RunCheckpoint
from amdim_tf.run.loader import open_encoder
from amdim_tf.run.run_config import prepare_workdir
from amdim_tf.run.workdir import WorkdirConflictError
from amdim_tf.use.report import read_metrics


def wait_for_step(workdir, step, proc, timeout=120):
    t0 = time.time()
    while latest_step(workdir) < step:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.2)
    return latest_step(workdir)


def test_train_writes_workdir_and_resumes_in_process(tiny_config, tmp_path):
    wd = str(tmp_path / "run")
    tiny_config.train.verbose = 0
    model, res = train_lib.train(tiny_config, wd)
    assert res["status"] == "completed" and res["start"] == "started from scratch"
    assert int(model.optimizer.iterations) == 3
    assert json.loads(Path(wd, "config.json").read_text())["model"]["ndf"] == 8
    records = read_metrics(os.path.join(wd, "metrics.jsonl"))
    keys = set().union(*records)
    for tag in (
        "loss/total",
        "nce/1t5",
        "nce/1t7",
        "nce/5t5",
        "loss/reg",
        "probe/linear_acc",
        "probe/mlp_acc",
        "perf/images_per_sec",
        "optim/lr",
        "probe/eval_linear_acc",
    ):
        assert tag in keys, tag
    assert glob.glob(os.path.join(wd, "events.out.tfevents*"))
    # Same run, longer: resumes at step 3 and continues the step counter and the log.
    tiny_config.train.epochs = 2
    model, res = train_lib.train(tiny_config, wd)
    assert res["start"].startswith("resumed from") and "at step 3" in res["start"]
    assert int(model.optimizer.iterations) == 6
    steps = [r["step"] for r in read_metrics(os.path.join(wd, "metrics.jsonl"))]
    assert max(steps) == 6 and steps.count(1) == 1
    # View pairs went to TensorBoard once, at the start.
    tags = set()
    for ev in glob.glob(os.path.join(wd, "events.out.tfevents*")):
        for e in tf.compat.v1.train.summary_iterator(ev):
            tags.update(v.tag for v in e.summary.value)
    assert "data/view_pairs" in tags and "nce/1t5" in tags


def test_steps_per_execution_keeps_the_log_and_checkpoint_schedule(tiny_config, tmp_path):
    # Keras calls batch-end callbacks once per execution (here after steps 3, 6, 9), so
    # the monitor must act when a multiple of its period was passed, not only hit.
    wd = str(tmp_path / "run")
    tiny_config.train.verbose = 0
    tiny_config.train.steps_per_epoch = 9
    tiny_config.train.steps_per_execution = 3
    tiny_config.train.log_every_steps = 2
    tiny_config.train.checkpoint_every_steps = 4
    tiny_config.train.keep_checkpoints = 5
    model, res = train_lib.train(tiny_config, wd)
    assert res["status"] == "completed" and int(model.optimizer.iterations) == 9
    records = read_metrics(os.path.join(wd, "metrics.jsonl"))
    assert [r["step"] for r in records if "loss/total" in r] == [3, 6, 9]
    saved = tf.train.get_checkpoint_state(
        os.path.join(wd, "checkpoints")
    ).all_model_checkpoint_paths
    assert [int(p.rsplit("-", 1)[1]) for p in saved] == [6, 9]


def test_workdir_of_another_run_is_refused_unless_overwrite(tiny_config, tmp_path):
    wd = str(tmp_path / "run")
    prepare_workdir(tiny_config, wd)
    # A run with a checkpoint (one without holds nothing to resume, so it is not guarded).
    os.makedirs(os.path.join(wd, "checkpoints"))
    Path(wd, "checkpoints", "ckpt-1.index").write_bytes(b"")
    tiny_config.model.ndf = 16
    with pytest.raises(WorkdirConflictError, match="model.ndf: 8 -> 16.*--overwrite"):
        prepare_workdir(tiny_config, wd)
    prepare_workdir(tiny_config, wd, overwrite=True)
    assert json.loads(Path(wd, "config.json").read_text())["model"]["ndf"] == 16
    assert not os.path.exists(os.path.join(wd, "checkpoints"))
    tiny_config.train.epochs = 7  # training longer is the same run
    prepare_workdir(tiny_config, wd)


def test_a_run_written_before_keys_were_added_is_the_same_run(tiny_config, tmp_path):
    """Keys added to the code later (their defaults keep the old behaviour) must not make
    an older workdir 'another run'."""
    wd = str(tmp_path / "run")
    prepare_workdir(tiny_config, wd)
    os.makedirs(os.path.join(wd, "checkpoints"))
    Path(wd, "checkpoints", "ckpt-1.index").write_bytes(b"")
    old = json.loads(Path(wd, "config.json").read_text())
    for section, key in (("model", "n_mix"), ("loss", "mix_alpha"), ("train", "knn_examples")):
        del old[section][key]
    del old["precision"]  # added when the default was float32, which the tiny config pins
    Path(wd, "config.json").write_text(json.dumps(old))
    prepare_workdir(tiny_config, wd)
    tiny_config.model.n_mix = 2  # but a real change still is another run
    with pytest.raises(WorkdirConflictError, match="model.n_mix: 0 -> 2"):
        prepare_workdir(tiny_config, wd)


@pytest.mark.parametrize(
    "signum,code,status",
    [(signal.SIGTERM, 143, "preempted"), (signal.SIGINT, 130, "interrupted")],
)
def test_sigterm_or_ctrl_c_checkpoints_and_exits(tmp_path, signum, code, status):
    wd = str(tmp_path / "run")
    proc = run_tool(
        "train.py",
        "--config",
        TINY,
        "--workdir",
        wd,
        "--config.train.verbose=0",
        "--config.train.checkpoint_every_steps=3",
        "--config.train.epochs=400",
        wait=False,
    )
    try:
        before = wait_for_step(wd, 3, proc)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, out
    assert status in out and "Traceback" not in out
    assert latest_step(wd) > before or latest_step(wd) == before
    assert not os.path.exists(os.path.join(wd, ".lock"))  # released, and removed


def test_evaluate_tool_writes_eval_json(tiny_run, tmp_path):
    wd = str(tmp_path / "run")
    shutil.copytree(tiny_run, wd)
    r = run_command("evaluate", f"--workdir={wd}", "--baselines", "--max_train=300")
    assert r.returncode == 0, r.stderr
    rows = json.loads(Path(wd, "eval.json").read_text())["rows"]
    assert [row["model"] for row in rows][0] == "raw pixels" and len(rows) == 3
    assert [row["features"] for row in rows] == ["pixels", "r1", "r1"]
    assert "| raw pixels |" in r.stdout
    r = run_command("evaluate", f"--workdir={wd}", "--max_train=0", "--features=r1,r5")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(Path(wd, "eval.json").read_text())["rows"]
    assert row["features"] == "r1+r5" and ", r1+r5 |" in r.stdout
    assert row["n_train"] > 300  # 0 = the whole train split
    assert open_encoder(wd).source == f"ckpt-{latest_step(wd)}"


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            [
                "--config",
                TINY,
                "--workdir",
                "{wd}",
                "--config.data.source=npz",
                "--config.data.path=/nonexistent/x.npz",
            ],
            "/nonexistent/x.npz",
        ),
        (["--config", TINY, "--workdir", "{wd}", "--config.model.nope=1"], "nope"),
        (["--config", TINY, "--workdir", "{wd}", "--config.train.epochs=two"], "two"),
        (["--config", "configs/missing.py", "--workdir", "{wd}"], "configs/missing.py"),
        (["--config", TINY], "workdir"),
    ],
)
def test_train_tool_user_errors_are_one_line(tmp_path, args, expected):
    r = run_command("train", *[a.format(wd=tmp_path / "run") for a in args])
    assert r.returncode != 0
    err = [
        line
        for line in r.stderr.splitlines()
        if line.strip() and not line.startswith(("I0000", "WARNING", "E0000"))
    ]
    assert "Traceback" not in r.stderr, r.stderr
    assert any(expected in line for line in err), r.stderr
    assert len(err) <= 2, err


def test_tools_have_help():
    for name in ("train", "evaluate"):
        r = run_command(name, "--helpshort")  # absl exits 1 after printing help
        assert "--workdir" in r.stdout and "Traceback" not in r.stderr


def test_encoder_only_restore_gets_every_trained_weight(tiny_config, tmp_path):
    """The partial restore used by evaluate/export must bind every encoder variable
    (layers kept in Python lists were once invisible to tf.train.Checkpoint)."""
    import keras

    from amdim_tf.run.checkpoints import restore_parts
    from amdim_tf.run.loader import untrained_encoder

    model = build_model(tiny_config, 3, 10)
    x = np.random.RandomState(0).rand(8, 32, 32, 3).astype("float32")
    model.fit(
        tf.data.Dataset.from_tensors(((x, x), np.arange(8) % 10)).repeat(),
        epochs=1,
        steps_per_epoch=2,
        verbose=0,
    )
    path = RunCheckpoint(model, str(tmp_path), 3).save(0)
    keras.utils.set_random_seed(99)
    enc = untrained_encoder(tiny_config, seed=99)
    restore_parts(path, encoder=enc)
    assert len(enc.variables) == len(model.encoder.variables)
    for a, b in zip(model.encoder.variables, enc.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_demo_and_export_from_a_workdir(tmp_path):
    """The README's main job (tiny variant): train, evaluate, export (with a LiteRT file
    checked against the SavedModel when the converters are installed), in one command;
    then amdim-export exports the same run from its workdir."""
    import importlib.util

    edge = importlib.util.find_spec("ai_edge_litert") is not None
    wd = str(tmp_path / "demo")
    r = run_command(
        "demo", f"--config={TINY}", f"--workdir={wd}", "--config.train.verbose=0",
        "--format=savedmodel,litert_int8w" if edge else "--format=savedmodel",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    for row in ("| raw pixels |", "| untrained encoder, same shape |", "| AMDIM-trained encoder |"):
        assert row in r.stdout
    assert os.path.exists(os.path.join(wd, "export", "1", "saved_model.pb"))
    if edge:
        assert "litert_int8w:" in r.stdout and "checked on 64 images" in r.stdout
        assert os.path.exists(os.path.join(wd, "export", "1", "encoder_int8w.tflite"))
    bad = run_command("demo", f"--config={TINY}", f"--workdir={wd}", "--format=tflite")
    assert bad.returncode != 0 and "format tflite is unknown" in bad.stderr
    r = run_command("export", f"--workdir={wd}", "--version=2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.path.exists(os.path.join(wd, "export", "2", "saved_model.pb"))
