"""amdim_tf/durable.py: atomic files and directories, the one stale-stage rule, recovery of
a parked output, the JSONL repair, storage-error lines, a symlinked output (issue 33 item
20) and two writers into one output (item 21)."""

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

from amdim_tf import durable
from amdim_tf.errors import UserError

DEAD = 2**31 - 2  # above any pid_max: no live process has it
MANIFEST = "result.json"


def _listing(directory):
    return sorted(os.listdir(directory))


def _write_output(output, text):
    with output.staged() as stage:
        with open(os.path.join(stage, "table.md"), "w") as f:
            f.write(text)
        with open(os.path.join(stage, MANIFEST), "w") as f:
            json.dump({"text": text}, f)


def _read_output(out):
    return {f: open(os.path.join(out, f)).read() for f in _listing(out)}


# -- one file ---------------------------------------------------------------------------


def test_a_file_is_replaced_whole_and_an_error_leaves_the_old_one(tmp_path):
    path = tmp_path / "sub" / "x.json"
    durable.write_json(str(path), {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(KeyError), durable.atomic_path(str(path)) as stage:
        with open(stage, "w") as f:
            f.write("{half")
        raise KeyError("killed midway")
    assert json.loads(path.read_text()) == {"a": 1}
    assert _listing(path.parent) == ["x.json"]  # the stage was removed


def test_a_stage_keeps_the_extension_for_writers_that_need_it(tmp_path):
    with durable.atomic_path(str(tmp_path / "model.keras")) as stage:
        assert stage.endswith(".keras") and os.path.basename(stage).startswith(".model.keras.")
        open(stage, "w").close()


def test_stale_stages_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f".x.json.staging-{DEAD}-ab12.json"
    live = tmp_path / f".x.json.staging-{os.getpid()}-cd34.json"
    other = tmp_path / f".y.json.staging-{DEAD}-ef56.json"  # another target's
    for p in (dead, live, other):
        p.write_text("?")
    durable.write_text(str(tmp_path / "x.json"), "{}")
    assert not dead.exists() and live.exists() and other.exists()


def test_a_symlinked_file_is_written_through(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    durable.write_text(str(link), "new")
    assert link.is_symlink() and real.read_text() == "new"


# -- an appended log --------------------------------------------------------------------


def test_a_torn_last_line_is_cut_before_the_next_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    durable.append_jsonl(str(path), {"step": 1})
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')  # a kill in the middle of a write
    durable.append_jsonl(str(path), {"step": 3, "b": 0, "a": 1}, sort_keys=False)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 3]
    assert lines[1] == '{"step": 3, "b": 0, "a": 1}'


# -- storage errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, says",
    [
        (errno.ENOSPC, ["the disk is full", "MiB free there", "free space"]),
        (errno.EDQUOT, ["quota", "MiB free there"]),
        (errno.EROFS, ["read-only", "writable"]),
    ],
)
def test_a_failed_file_write_is_one_storage_error_line(tmp_path, monkeypatch, code, says):
    path = tmp_path / "eval.json"

    def fail(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(durable.StorageError) as e:
        durable.write_json(str(path), {}, flag="--out")
    line = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in line
    assert line.startswith(f"cannot write {path}") and "nothing was written" in line, line
    assert all(s in line for s in says), line
    assert _listing(tmp_path) == []
    path.write_text("old")
    with pytest.raises(durable.StorageError, match="the previous output is unchanged"):
        durable.write_json(str(path), {})
    assert path.read_text() == "old"


def test_errors_that_are_not_storage_are_not_reworded(tmp_path):
    assert durable.storage_error(KeyError("x"), str(tmp_path)) is None
    assert durable.storage_error(OSError(errno.EIO, "I/O error"), str(tmp_path)) is None
    # An unreadable input outside the output is not the output's doing.
    outside = OSError(errno.EACCES, "Permission denied", "/data/cifar.npz")
    assert durable.storage_error(outside, str(tmp_path / "out")) is None
    assert durable.WorkdirError is durable.StorageError


def test_a_failed_directory_write_names_the_output_and_keeps_the_previous(tmp_path):
    out = tmp_path / "out"
    output = durable.OutputDir(str(out), MANIFEST, "a report", flag="--out")
    _write_output(output, "A")
    before = _read_output(out)
    output = durable.OutputDir(str(out), MANIFEST, "a report", flag="--out")
    with pytest.raises(durable.StorageError) as e, output.staged() as stage:
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(stage, "r1.npy"))
    line = str(e.value)
    assert line.startswith(f"cannot write a report to {out} (") and "disk is full" in line
    assert "pass --out on another disk" in line and "previous output is unchanged" in line
    assert _read_output(out) == before and _listing(tmp_path) == ["out"]


# -- a directory of results -------------------------------------------------------------


def test_an_output_directory_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    _write_output(durable.OutputDir(str(out), MANIFEST, "a report"), "A")
    (out / "extra.txt").write_text("of A only")
    _write_output(durable.OutputDir(str(out), MANIFEST, "a report"), "B")
    assert _read_output(out) == {"table.md": "B", MANIFEST: '{"text": "B"}'}
    assert _listing(tmp_path) == ["out"]


def test_a_directory_that_is_not_such_an_output_or_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(durable.StorageError, match="holds files that are not a report"):
        durable.OutputDir(str(tmp_path), MANIFEST, "a report")
    with pytest.raises(durable.StorageError, match="is a file, not a directory"):
        durable.OutputDir(str(tmp_path / "notes.txt"), MANIFEST, "a report")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_staged_output_without_its_manifest_is_a_bug(tmp_path):
    output = durable.OutputDir(str(tmp_path / "out"), MANIFEST, "a report")
    with pytest.raises(RuntimeError, match="without its result.json"), output.staged():
        pass
    assert _listing(tmp_path) == []


def test_an_output_parked_by_a_kill_between_the_renames_is_put_back(tmp_path):
    out = tmp_path / "out"
    parked = tmp_path / f".out.previous-{DEAD}"
    parked.mkdir()
    (parked / MANIFEST).write_text("{}")
    stage = tmp_path / f".out.staging-{DEAD}-ab12cd34-x"  # the new one, killed
    stage.mkdir()
    durable.OutputDir(str(out), MANIFEST, "a report")
    assert (out / MANIFEST).exists() and not parked.exists()
    _write_output(durable.OutputDir(str(out), MANIFEST, "a report"), "B")
    assert _listing(tmp_path) == ["out"]  # the dead writer's stage is gone too


def test_a_parked_output_beside_a_complete_one_is_removed_and_a_live_one_kept(tmp_path):
    out = tmp_path / "out"
    _write_output(durable.OutputDir(str(out), MANIFEST, "a report"), "B")
    parked = tmp_path / f".out.previous-{DEAD}"
    parked.mkdir()
    (parked / MANIFEST).write_text("{}")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".out.staging-{sleeper.pid}-ab12cd34-x"
        live.mkdir()
        _write_output(durable.OutputDir(str(out), MANIFEST, "a report"), "C")
        assert live.exists() and not parked.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _read_output(out)["table.md"] == "C"


def test_a_symlinked_output_is_written_through_the_link(tmp_path):
    """Issue 33 item 20: the link stays, its target gets the new output, nothing dangling
    is left, and later writes work."""
    real = tmp_path / "disk" / "real"
    _write_output(durable.OutputDir(str(real), MANIFEST, "a report"), "A")
    link = tmp_path / "out"
    link.symlink_to(real)
    for text in ("B", "C"):
        _write_output(durable.OutputDir(str(link), MANIFEST, "a report"), text)
        assert link.is_symlink() and os.path.realpath(link) == str(real)
        assert _read_output(link)["table.md"] == text
        assert _listing(tmp_path) == ["disk", "out"] and _listing(real.parent) == ["real"]


def test_a_dangling_symlinked_output_is_created_at_its_target(tmp_path):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "missing")
    _write_output(durable.OutputDir(str(link), MANIFEST, "a report"), "A")
    assert link.is_symlink() and (tmp_path / "missing" / "table.md").read_text() == "A"


_SLOW_WRITER = """
import json, os, sys
from amdim_tf import durable
output = durable.OutputDir(sys.argv[1], "result.json", "a report", flag="--out")
print("started", flush=True)
sys.stdin.readline()  # the work, while another process writes the same output
try:
    with output.staged() as stage:
        with open(os.path.join(stage, "table.md"), "w") as f:
            f.write("slow")
        with open(os.path.join(stage, "result.json"), "w") as f:
            json.dump({"text": "slow"}, f)
except durable.StorageError as e:
    print(e, flush=True)
    sys.exit(2)
"""


@pytest.mark.parametrize("before", ["absent", "an output"])
def test_a_writer_never_replaces_an_output_another_finished_meanwhile(tmp_path, before):
    """Issue 33 item 21, with two processes: a slow writer (finetune) starts, a fast one
    (embed) completes into the same output, then the slow one finishes: it refuses in one
    line and the fast one's output stays."""
    out = tmp_path / "out"
    if before != "absent":
        _write_output(durable.OutputDir(str(out), MANIFEST, "a report"), "A")
    slow = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SLOW_WRITER), str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert slow.stdout.readline().strip() == "started", slow.stderr.read()[-2000:]
        _write_output(durable.OutputDir(str(out), MANIFEST, "a report"), "fast")
        stdout, stderr = slow.communicate("go\n", timeout=120)
    finally:
        slow.kill()
    assert slow.returncode == 2, stderr[-2000:]
    assert "was written by another process" in stdout and "--out=" in stdout, stdout
    assert len(stdout.strip().splitlines()) == 1
    assert _read_output(out)["table.md"] == "fast"
    assert _listing(tmp_path) == ["out"]
