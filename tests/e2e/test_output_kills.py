"""Goal test for the tools that write a directory of results (embed, finetune): kill -9 at
random moments while the new output is being written leaves the previous output or the
new one, never a mix, and the next run cleans up after the killed ones (issue 21).

Each tool first writes a previous output A into OUT (an uninterrupted process), then
five processes writing a different output B into the same OUT are killed at seeded
random moments after their stage appeared beside OUT (the work and every write after
it), one in each fifth of that window, so five kills cover it as evenly as eight
uniform ones did (2026-12-05: 8 uniform kills, 70 s of CPU for both tools); after each
kill OUT is snapshot and put back to A. A last uninterrupted process
writes B. Every snapshot must be A or that final B, file for file.
"""

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
from conftest import run_tool

KILLS = 5


def _files(out):
    """Relative paths of every file under `out`, hidden ones included."""
    return sorted(
        os.path.relpath(os.path.join(d, f), out) for d, _, names in os.walk(out) for f in names
    )


def _stages(out):
    parent, name = os.path.split(out)
    return [e for e in os.listdir(parent) if e.startswith(f".{name}.")]


def _write(tool, args, out, log):
    """Runs `tool` writing into `out`; returns (seconds from its stage appearing to its
    exit, seconds to its stage appearing)."""
    start = time.perf_counter()
    proc = run_tool(tool, *args, f"--out={out}", wait=False, log=log)
    staged = None
    while proc.poll() is None:
        if staged is None and _stages(out):
            staged = time.perf_counter()
        time.sleep(0.01)
    assert proc.returncode == 0, log.read_text()[-2000:]
    end = time.perf_counter()
    return end - (staged or end), (staged or end) - start


def _kill_while_writing(tool, args_a, args_b, state, tmp_path, seed):
    """The procedure of the module docstring; `state(out)` reduces an output to what
    must be equal between two outputs of the same command (no timings)."""
    out = str(tmp_path / "out")
    log = tmp_path / "log.txt"
    window, _ = _write(tool, args_a, out, log)
    previous = str(tmp_path / "previous")
    shutil.copytree(out, previous)
    rng = random.Random(seed)
    snapshots = []
    for k in range(KILLS):
        proc = run_tool(tool, *args_b, f"--out={out}", wait=False, log=log)
        try:
            while proc.poll() is None and not _stages(out):
                time.sleep(0.005)
            time.sleep(window * rng.uniform(k, k + 1) / KILLS)  # in the k-th fifth
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=120)
        snapshot = str(tmp_path / f"after_kill_{k}")
        shutil.copytree(out, snapshot)
        snapshots.append(snapshot)
        shutil.rmtree(out)
        shutil.copytree(previous, out)  # every kill interrupts the same replacement
    _write(tool, args_b, out, log)
    assert not _stages(out), f"left beside the output: {_stages(out)}"
    want_a, want_b = state(previous), state(out)
    assert want_a != want_b
    kinds = []
    for snapshot in snapshots:
        got = state(snapshot)
        assert got in (want_a, want_b), f"{snapshot} is neither output: {_files(snapshot)}"
        kinds.append("new" if got == want_b else "previous")
    print(f"{tool}: after each kill OUT held the", kinds, "output")


def _embed_state(out):
    summary = json.loads(Path(out, "embed.json").read_text())
    features = np.load(os.path.join(out, "r1.npy"))
    return (
        _files(out),
        summary["split"],
        summary["images"],
        Path(out, "index.tsv").read_text(),
        features.shape,
        np.round(features, 4).tobytes(),
    )


def test_killed_embed_leaves_the_previous_or_the_new_output(tiny_run, tmp_path):
    common = [f"--encoder={tiny_run}", "--batch_size=64"]
    _kill_while_writing(
        "embed.py", [*common, "--split=test"], [*common, "--split=train"], _embed_state,
        tmp_path, seed=21,
    )  # fmt: skip


def _finetune_state(out):
    result = json.loads(Path(out, "finetune.json").read_text())
    rows = [(r["arm"], r["seed"], round(r["test_acc"], 6)) for r in result["rows"]]
    return _files(out), rows, Path(out, "finetune.md").read_text()


def test_killed_finetune_leaves_the_previous_or_the_new_output(tiny_run, tmp_path):
    common = [
        f"--encoder={tiny_run}", "--per_class=3", "--arms=frozen,finetune", "--epochs=1",
        "--min_steps=3", "--max_steps=3", "--batch_size=8", "--evals=1", "--max_test=60",
    ]  # fmt: skip
    _kill_while_writing(
        "finetune.py", [*common, "--seeds=1"], [*common, "--seeds=2"], _finetune_state,
        tmp_path, seed=25,
    )  # fmt: skip
