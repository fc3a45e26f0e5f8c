"""Goal test for every writer of the package (a module that writes through
`amdim_tf/durable.py`): kill -9 at seeded moments while a new output is being written
leaves the previous output or the new one, file for file, never a mix, and the next run
cleans up after the killed ones (issue 21; issue 31 item 1).

`WRITERS` lists each module that calls the durable API with the kill test that covers it;
`test_every_writer_is_covered` finds the modules by reading the package, so a new writer
fails it until it is listed. A command's kill test: a previous output A is in OUT (written
by an uninterrupted process, or in this one), then KILLS processes writing a different
output B into the same OUT are killed at seeded moments after their stage appeared beside
OUT (the work and every write after it), one in each KILLS-th of that window (2026-12-05:
5 stratified kills cover it as evenly as 8 uniform ones did); after each kill OUT is
snapshot (after the recovery the next writer does first) and put back to A. A last
uninterrupted process writes B. Every snapshot must be A or that final B, file for file.
The writers whose one write is a single file (`durable.write_json` and friends after the
work) are covered by the kill test of that file primitive.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, fresh_env, run_tool

from amdim_tf import durable

KILLS = 5
FEW_KILLS = 3  # the writers added with issue 31: the CI cost stays small

# Every module that writes through amdim_tf/durable.py -> the test that kills it.
WRITERS = {
    "use/embed.py": "test_killed_embed_leaves_the_previous_or_the_new_output",
    "use/report.py": "test_killed_embed_leaves_the_previous_or_the_new_output",  # its PNGs
    "use/finetune.py": "test_killed_finetune_leaves_the_previous_or_the_new_output",
    "use/export.py": "test_killed_export_leaves_the_previous_or_the_new_version",
    "use/inspect.py": "test_killed_inspection_leaves_the_previous_or_the_new_report",
    # One checked file at a time (durable.atomic_path), its record by durable.write_json.
    "use/edge.py": "test_killed_file_write_leaves_the_previous_or_the_new_file",
    "run/loader.py": "test_killed_file_write_leaves_the_previous_or_the_new_file",  # .keras
    "cli/evaluate.py": "test_killed_file_write_leaves_the_previous_or_the_new_file",
    "cli/benchmark.py": "test_killed_file_write_leaves_the_previous_or_the_new_file",
    "cli/edge_cost.py": "test_killed_file_write_leaves_the_previous_or_the_new_file",
    "cli/demo.py": "test_killed_file_write_leaves_the_previous_or_the_new_file",
    "use/compare.py": "test_killed_file_write_leaves_the_previous_or_the_new_file",
    # The work directory of a training run: killed in every phase, then resumed.
    **{
        f"run/{m}.py": "run/test_run_robustness.py::test_killed_in_every_phase_a_run_ends_identical"
        for m in ("callbacks", "checkpoints", "run_config", "workdir")
    },
}
# Writers covered by the file primitive may call only these (one file each).
FILE_CALLS = {"write_json", "write_text", "write_bytes", "atomic_path", "scratch_dir"}
_DURABLE_CALL = re.compile(r"\bdurable\.(\w+)\(|from amdim_tf\.durable import \(?([\w, \n]+)\)?")


def _durable_calls(path):
    """The durable functions a module of the package calls."""
    names = set()
    for attr, imported in _DURABLE_CALL.findall(Path(path).read_text()):
        names |= {attr} if attr else {n.strip() for n in imported.split(",") if n.strip()}
    return names


def _package_writers():
    package = os.path.join(ROOT, "amdim_tf")
    found = {}
    for directory, _, files in os.walk(package):
        for name in files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, package)
            if name.endswith(".py") and rel != "durable.py":
                calls = _durable_calls(path) - {"storage_error", "StorageError", "WorkdirError"}
                if calls:
                    found[rel] = calls
    return found


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_is_covered(writer):
    found = _package_writers()
    assert set(found) == set(WRITERS), (
        f"writers not listed in WRITERS: {sorted(set(found) - set(WRITERS))}; listed but "
        f"writing nothing through durable: {sorted(set(WRITERS) - set(found))}"
    )
    test = WRITERS[writer]
    if "::" in test:
        file, name = test.split("::")
        assert f"def {name}(" in Path(ROOT, "tests", file).read_text(), test
    else:
        assert callable(globals().get(test)), test
    if test == "test_killed_file_write_leaves_the_previous_or_the_new_file":
        assert found[writer] <= FILE_CALLS, (writer, found[writer])


def _files(out):
    """Relative paths of every file under `out`, hidden ones included."""
    return sorted(
        os.path.relpath(os.path.join(d, f), out) for d, _, names in os.walk(out) for f in names
    )


def _stages(out):
    parent, name = os.path.split(out)
    return [e for e in os.listdir(parent) if e.startswith(f".{name}.")]


def _copy(src, dst):
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _tool(tool):
    """Starts `tools/<tool>` writing B into `out`."""
    return lambda args, out, log: run_tool(tool, *args, f"--out={out}", wait=False, log=log)


def _write(start, args, out, log):
    """Runs a writer into `out`; returns the seconds from its stage appearing to its exit."""
    proc = start(args, out, log)
    staged = None
    while proc.poll() is None:
        if staged is None and _stages(out):
            staged = time.perf_counter()
        time.sleep(0.01)
    assert proc.returncode == 0, Path(log).read_text()[-2000:]
    end = time.perf_counter()
    return end - (staged or end)


def _kill_while_writing(start, args_a, args_b, state, tmp_path, seed, **options):
    """The procedure of the module docstring; `state(out)` reduces an output to what
    must be equal between two outputs of the same command (no timings). Options:
    `make_a(out)` writes A in this process instead of `args_a`; `manifest` names the
    file that marks a complete output directory (its parked output is put back before a
    snapshot, as the next writer would); `out` names the target; `kills`."""
    out = str(tmp_path / options.get("out", "out"))
    log = tmp_path / "log.txt"
    if options.get("make_a"):
        options["make_a"](out)
        window = None
    else:
        window = _write(start, args_a, out, log)
    previous = str(tmp_path / "previous")
    _copy(out, previous)
    if window is None:  # measured on B, then back to A
        window = _write(start, args_b, out, log)
        _remove(out)
        _copy(previous, out)
    kills = options.get("kills", KILLS)
    rng = random.Random(seed)
    snapshots = []
    for k in range(kills):
        proc = start(args_b, out, log)
        try:
            while proc.poll() is None and not _stages(out):
                time.sleep(0.005)
            time.sleep(window * rng.uniform(k, k + 1) / kills)  # in the k-th part
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=300)
        if options.get("manifest"):
            durable.OutputDir(out, options["manifest"], "the output")  # recovery
        snapshot = str(tmp_path / f"after_kill_{k}")
        _copy(out, snapshot)
        snapshots.append(snapshot)
        _remove(out)
        _copy(previous, out)  # every kill interrupts the same replacement
        if k < kills - 1:  # the last one's leftovers are for the final writer to remove
            for stage in _stages(out):
                _remove(os.path.join(os.path.dirname(out), stage))
    _write(start, args_b, out, log)
    assert not _stages(out), f"left beside the output: {_stages(out)}"
    want_a, want_b = state(previous), state(out)
    assert want_a != want_b
    kinds = []
    for snapshot in snapshots:
        got = state(snapshot)
        assert got in (want_a, want_b), f"{snapshot} is neither output: {_files(snapshot)}"
        kinds.append("new" if got == want_b else "previous")
    print("after each kill OUT held the", kinds, "output")


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
        _tool("embed.py"), [*common, "--split=test"], [*common, "--split=train"], _embed_state,
        tmp_path, seed=21, manifest="embed.json",
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
        _tool("finetune.py"), [*common, "--seeds=1"], [*common, "--seeds=2"], _finetune_state,
        tmp_path, seed=25, manifest="finetune.json",
    )  # fmt: skip


def _export_state(version):
    # Not the variables' bytes: two exports of the same weights differ in them.
    return _files(version), json.loads(Path(version, "amdim_encoder.json").read_text())


def test_killed_export_leaves_the_previous_or_the_new_version(tiny_run, tmp_path):
    from amdim_tf.run import loader
    from amdim_tf.use import export

    def previous_version(out):  # A: the r1 outputs alone, written by the library
        loaded = loader.open_encoder(tiny_run)
        export.export_encoder(loaded.encoder, out, loaded.preset, features=["r1"])

    def start(args, out, log):  # --out is the base, OUT/1 the version
        base = os.path.dirname(out)
        return run_tool("export.py", *args, f"--out={base}", wait=False, log=log)

    _kill_while_writing(
        start, None, [f"--encoder={tiny_run}", "--overwrite"], _export_state, tmp_path,
        seed=31, manifest="amdim_encoder.json", out="base/1", make_a=previous_version,
        kills=FEW_KILLS,
    )  # fmt: skip


def _inspection_state(out):
    report = json.loads(Path(out, "report.json").read_text())
    csvs = {f: Path(out, f).read_text() for f in _files(out) if f.endswith(".csv")}
    return _files(out), report["k"], report["counts"], csvs


def test_killed_inspection_leaves_the_previous_or_the_new_report(tiny_run, tmp_path):
    from amdim_tf.run.run_config import load_run_config
    from amdim_tf.use import embed

    embedding = str(tmp_path / "emb")
    embed.embed(tiny_run, load_run_config(tiny_run).data, "test", embedding, verbose=0)
    common = [f"--embeddings={embedding}"]
    _kill_while_writing(
        _tool("inspect_data.py"), [*common, "--k=3", "--top=0"], [*common, "--k=5", "--top=4"],
        _inspection_state, tmp_path, seed=33, manifest="report.json", kills=FEW_KILLS,
    )  # fmt: skip


_FILE_WRITER = """
import sys
from amdim_tf import durable
rows = [{"row": i, "value": i * float(sys.argv[2])} for i in range(400_000)]
durable.write_json(sys.argv[1], {"rows": rows}, indent=1, sort_keys=False)
"""


def test_killed_file_write_leaves_the_previous_or_the_new_file(tmp_path):
    """The one file primitive every single-file writer goes through (a JSON of ~20 MB, so
    that its write, fsync and rename take a window worth killing in)."""

    def start(args, out, log):
        with open(log, "w") as f:
            return subprocess.Popen(
                [sys.executable, "-c", _FILE_WRITER, out, *args], cwd=tmp_path,
                env=fresh_env(), stdout=f, stderr=subprocess.STDOUT,
            )  # fmt: skip

    _kill_while_writing(
        start, ["1.0"], ["2.0"], lambda path: Path(path).read_bytes(),
        tmp_path, seed=35, out="result.json", kills=FEW_KILLS,
    )  # fmt: skip
