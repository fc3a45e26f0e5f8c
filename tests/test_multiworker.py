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
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "configs/amdim_digits_demo.py:tiny"


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_workers(workdir, *extra, timeout=120):
    """Both workers of a fresh 2-worker cluster; returns [(returncode, output)] by task index."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), f"--config={TINY}",
               "--config.distribute=multiworker", "--config.train.verbose=0",
               # Kept short: 2 steps an epoch, one eval batch, no view images.
               "--config.train.steps_per_epoch=2", "--config.train.eval_steps=1",
               "--config.train.log_view_pairs=0",
               f"--workdir={workdir}", *extra]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
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


def latest_step(workdir):
    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else -1


@pytest.mark.slow
def test_two_workers_train_checkpoint_on_chief_and_resume(tmp_path):
    wd = str(tmp_path / "run")
    results = run_workers(wd)
    for code, out in results:
        assert code == 0, out[-3000:]
        assert "over 2 replica(s); started from scratch" in out, out[-3000:]
    assert latest_step(wd) == 2  # one epoch
    steps = [json.loads(line)["step"] for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert steps.count(1) == 1  # only the chief logs
    assert sorted(os.listdir(wd)) == sorted(
        ["best", "best.json", "checkpoints", "config.json", "metrics.jsonl"]
        + [f for f in os.listdir(wd) if f.startswith("events.out.tfevents")])
    # The same commands, one more epoch: both workers resume from the chief's step 2.
    results = run_workers(wd, "--config.train.epochs=2")
    for code, out in results:
        assert code == 0, out[-3000:]
        assert "resumed from" in out and "at step 2" in out, out[-3000:]
    assert latest_step(wd) == 4
    steps = [json.loads(line)["step"] for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert max(steps) == 4 and steps.count(3) == 1
