"""Multi-worker training through the user's tool: two local workers on loopback.

Each worker is `tools/train.py --config.distribute=multiworker` with its own
TF_CONFIG (the same cluster of two 127.0.0.1 ports, task index 0 or 1), both on
the same work directory. Worker 0 is the chief: it alone writes config.json,
metrics and the checkpoints that count; worker 1 saves into a temporary
directory it deletes. Running the same two commands again resumes from the
chief's checkpoint.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY, latest_step

from amdim_tf.use.report import read_metrics


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_workers(workdir, *extra):
    """Both workers of a fresh 2-worker cluster, started (Popen objects by task index)."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="3",
            CUDA_VISIBLE_DEVICES="",
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        cmd = [
            sys.executable,
            os.path.join(ROOT, "tools", "train.py"),
            f"--config={TINY}",
            "--config.distribute=multiworker",
            "--config.train.verbose=0",
            # Kept short: 2 steps an epoch, one eval batch, no view images.
            "--config.train.steps_per_epoch=2",
            "--config.train.eval_steps=1",
            "--config.train.log_view_pairs=0",
            f"--workdir={workdir}",
            *extra,
        ]
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    return procs


def wait_workers(procs, timeout=120):
    """[(returncode, output)] by task index; kills what is still running after `timeout`."""
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            results.append((p.returncode, out))
    finally:
        for p in procs:  # a worker whose peer died waits forever on a collective
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def run_workers(workdir, *extra, timeout=120):
    return wait_workers(start_workers(workdir, *extra), timeout)


@pytest.mark.slow
def test_two_workers_train_checkpoint_on_chief_and_resume(tmp_path):
    wd = str(tmp_path / "run")
    results = run_workers(wd)
    for code, out in results:
        assert code == 0, out[-3000:]
        assert "over 2 replica(s), float32; started from scratch" in out, out[-3000:]
    assert latest_step(wd) == 2  # one epoch
    steps = [r["step"] for r in read_metrics(os.path.join(wd, "metrics.jsonl"))]
    assert steps.count(1) == 1  # only the chief logs
    assert sorted(os.listdir(wd)) == sorted(
        ["best", "best.json", "checkpoints", "config.json", "metrics.jsonl"]
        + [f for f in os.listdir(wd) if f.startswith("events.out.tfevents")]
    )
    # The same commands for many more epochs within a 3 s budget, which each worker's
    # own clock reaches at its own step: both resume from the chief's step 2 and stop
    # together (otherwise one would hang in the next all-reduce and time out).
    results = run_workers(wd, "--config.train.epochs=100000", "--config.train.max_seconds=3")
    for code, out in results:
        assert code == 0 and "stopped at the time budget" in out, (code, out[-3000:])
        assert "resumed from" in out and "at step 2" in out, out[-3000:]
    stopped = latest_step(wd)
    assert stopped > 2
    records = read_metrics(os.path.join(wd, "metrics.jsonl"))
    steps = [r["step"] for r in records if "loss/total" in r]
    assert steps == list(range(1, stopped + 1))  # each step once: the chief's log alone


def logged_steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line)["step"] for line in f if line.endswith("\n")]


@pytest.mark.slow
def test_one_workers_sigterm_stops_all_workers_at_one_step(tmp_path):
    """A SIGTERM seen by one worker alone stops every worker at the same step, with the
    chief's checkpoint there; otherwise the others would hang in the next all-reduce
    (and this test would time out). The time budget, which each worker's own clock
    reaches at its own step, is the resume of the test above."""
    wd = str(tmp_path / "run")
    long_epoch = (
        "--config.train.steps_per_epoch=100000",
        "--config.train.checkpoint_every_steps=0",
    )
    procs = start_workers(wd, *long_epoch)
    deadline = time.time() + 120
    while (
        max(logged_steps(wd), default=0) < 3 and time.time() < deadline and procs[0].poll() is None
    ):
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # the non-chief only
    results = wait_workers(procs, timeout=60)
    for code, out in results:
        assert code == 143 and "preempted" in out, (code, out[-3000:])
    stopped = latest_step(wd)
    assert stopped >= 3 and max(logged_steps(wd)) == stopped
