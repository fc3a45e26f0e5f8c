"""The error contract of the commands (issue 31 item 2): a `UserError` or a missing file is
one line and exit 2, AMDIM_TF_TRACEBACK=1 shows its traceback too, Ctrl-C is one line and
exit 130, and every other exception is a bug that keeps its traceback. Plus the small
command-line items of issues 32 (point 9) and 33 that this contract covers.

The commands run in this process (`conftest.run_command`), with a library function
replaced by one that raises, so no model is built.
"""

import os

import pytest
from conftest import ROOT, TINY, one_error_line, run_command

from amdim_tf.errors import TRACEBACK_ENV, USER_ERROR_EXIT_CODE, UserError


def _raising(error):
    def library_call(*args, **kwargs):
        raise error

    return library_call


def _search(tmp_path, *args):
    return run_command("search", "--index=idx", "--query=q.png", *args, cwd=tmp_path)


def test_a_bug_inside_a_library_call_keeps_its_traceback(tmp_path, monkeypatch):
    from amdim_tf.use import search

    monkeypatch.setattr(search, "search_files", _raising(KeyError("val_acc")))
    proc = _search(tmp_path, "--out=")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "KeyError: 'val_acc'" in proc.stderr
    assert "error: 'val_acc'" not in proc.stderr


def test_a_user_error_is_its_first_line_and_exit_2(tmp_path, monkeypatch):
    from amdim_tf.use import search

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    monkeypatch.setattr(search, "search_files", _raising(UserError("bad index\ndetails")))
    proc = _search(tmp_path, "--out=")
    assert proc.returncode == USER_ERROR_EXIT_CODE == 2
    assert one_error_line(proc) == "error: bad index"


def test_a_missing_file_is_one_line(tmp_path, monkeypatch):
    from amdim_tf.use import search

    monkeypatch.setattr(search, "search_files", _raising(FileNotFoundError("idx is gone")))
    proc = _search(tmp_path, "--out=")
    assert proc.returncode == 2 and one_error_line(proc) == "error: idx is gone"


def test_the_environment_switch_shows_a_user_errors_traceback(tmp_path, monkeypatch):
    from amdim_tf.use import search

    monkeypatch.setenv(TRACEBACK_ENV, "1")
    monkeypatch.setattr(search, "search_files", _raising(UserError("bad index")))
    proc = _search(tmp_path, "--out=")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "UserError: bad index" in proc.stderr
    assert proc.stderr.rstrip().endswith("error: bad index")


def test_ctrl_c_in_finetune_is_one_line_and_exit_130(tmp_path, monkeypatch):
    # Issue 33 item 29: a KeyboardInterrupt traceback before.
    from amdim_tf.use import finetune

    monkeypatch.setattr(finetune, "run_few_label_evaluation", _raising(KeyboardInterrupt()))
    proc = run_command(
        "finetune", "--encoder=run", f"--out={tmp_path / 'out'}", "--per_class=1", cwd=tmp_path
    )
    assert proc.returncode == 130
    assert one_error_line(proc) == "error: interrupted (Ctrl-C)"


# -- issue 32 point 9 and issue 33: flags refused in one line before any work -----------


def test_a_config_typo_names_only_the_bad_override(tmp_path):
    proc = run_command(
        "train",
        f"--config={ROOT}/{TINY}",
        f"--workdir={tmp_path / 'run'}",
        "--config.train.batch_size=3",
        "--config.train.batchsize=4",
        cwd=tmp_path,
    )
    line = one_error_line(proc)
    assert proc.returncode == 2
    assert line.startswith("error: bad config override --config.train.batchsize=4: ")
    assert 'Did you mean "batch_size"' in line
    assert "\\" not in line and "batch_size=3" not in line
    assert not (tmp_path / "run").exists()


def test_search_out_that_is_a_directory_is_refused_before_searching(tmp_path, monkeypatch):
    # Issue 33 item 9: IsADirectoryError traceback after the search.
    from amdim_tf.use import search

    monkeypatch.setattr(search, "search_files", _raising(AssertionError("searched")))
    (tmp_path / "hits").mkdir()
    proc = _search(tmp_path, f"--out={tmp_path / 'hits'}")
    assert "is a directory; pass a file name" in one_error_line(proc)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--agreement=5"], "--agreement=5.0 is not allowed; expected a share of the votes"),
        (["--agreement=-1"], "--agreement=-1.0 is not allowed"),
        (["--top=-3"], "--top=-3 is not allowed; expected an integer >= 0"),
    ],
)
def test_inspect_numbers_are_checked(tmp_path, monkeypatch, args, expected):
    # Issue 33 item 27.
    from amdim_tf.use import inspect

    monkeypatch.setattr(inspect, "inspect_embeddings", _raising(AssertionError("inspected")))
    proc = run_command("inspect_data", "--embeddings=a", f"--out={tmp_path}/o", *args)
    assert expected in one_error_line(proc)


def test_inspect_out_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    # Issue 33 item 15: FileExistsError traceback.
    from amdim_tf.use import inspect

    monkeypatch.setattr(inspect, "inspect_embeddings", _raising(AssertionError("inspected")))
    (tmp_path / "report").write_text("x")
    proc = run_command("inspect_data", "--embeddings=a", f"--out={tmp_path / 'report'}")
    assert "is a file, not a directory" in one_error_line(proc)


def test_export_out_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    # Issue 33 item 31: "[Errno 17] File exists" with no hint.
    from amdim_tf.run import loader

    monkeypatch.setattr(loader, "open_encoder", _raising(AssertionError("loaded")))
    (tmp_path / "exp").write_text("x")
    proc = run_command("export", "--encoder=run", f"--out={tmp_path / 'exp'}", cwd=tmp_path)
    assert "--out=" in (line := one_error_line(proc)) and "is a file, not a directory" in line


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--head_lr=inf", "--per_class=1"], "--head_lr=inf is not allowed"),  # 33 item 17
        (["--per_class=abc"], "--per_class=abc is not allowed; expected ints"),  # 33 item 28
    ],
)
def test_finetune_flags_are_named(tmp_path, monkeypatch, args, expected):
    from amdim_tf.use import finetune

    monkeypatch.setattr(finetune, "run_few_label_evaluation", _raising(AssertionError("ran")))
    proc = run_command("finetune", "--encoder=run", f"--out={tmp_path / 'o'}", *args)
    assert expected in one_error_line(proc)


def test_a_failed_start_leaves_no_empty_work_directory(tmp_path):
    # Issue 32 point 9: the data opens after the work directory was made and locked.
    run = tmp_path / "run"
    proc = run_command(
        "train",
        f"--config={ROOT}/{TINY}",
        f"--workdir={run}",
        "--config.data.source=npz",
        "--config.data.path=missing.npz",
        cwd=tmp_path,
    )
    assert "'missing.npz' does not exist; fix data.path" in one_error_line(proc)
    assert not run.exists()


# -- issue 31 item 5: a packaged preset names no path of this repository ---------------


def test_the_cifar_preset_reads_its_directory_from_the_environment(tmp_path, monkeypatch):
    from amdim_tf import presets

    monkeypatch.setenv("AMDIM_TF_CIFAR10_DIR", str(tmp_path))
    assert presets.load("amdim_cifar10_cpu").data.path == str(tmp_path / "cifar10-jpeg.npz")
    small = presets.load("amdim_cifar10_cpu:tiny").data.path
    assert small == str(tmp_path / "cifar10-jpeg-small.npz")


def test_without_the_variable_or_a_checkout_the_data_error_names_it(tmp_path, monkeypatch):
    from amdim_tf.data.sources.base import require_path
    from amdim_tf.presets import amdim_cifar10_cpu

    monkeypatch.delenv("AMDIM_TF_CIFAR10_DIR", raising=False)
    monkeypatch.setattr(amdim_cifar10_cpu, "_CHECKOUT_COPY", str(tmp_path / "absent"))
    path = amdim_cifar10_cpu.get_config().data.path
    assert path == "$AMDIM_TF_CIFAR10_DIR/cifar10-jpeg.npz"
    with pytest.raises(FileNotFoundError) as info:
        require_path(path, "data.path")
    assert "names the environment variable AMDIM_TF_CIFAR10_DIR, which is not set" in str(
        info.value
    ) and "--config.data.path=PATH" in str(info.value)


def test_in_a_checkout_the_shared_copy_is_found_from_any_directory(tmp_path, monkeypatch):
    from amdim_tf.presets import amdim_cifar10_cpu

    # <repo>/../shared/data/cifar10 as the preset computes it, here under tmp_path.
    data = tmp_path / "shared" / "data" / "cifar10"
    data.mkdir(parents=True)
    (data / "cifar10-jpeg.npz").write_bytes(b"")
    (tmp_path / "repo").mkdir()
    monkeypatch.setattr(
        amdim_cifar10_cpu,
        "_CHECKOUT_COPY",
        os.path.join(tmp_path, "repo", "..", "shared", "data", "cifar10"),
    )
    monkeypatch.delenv("AMDIM_TF_CIFAR10_DIR", raising=False)
    monkeypatch.chdir(tmp_path / "repo")  # the README's commands: the same path as before
    assert amdim_cifar10_cpu.get_config().data.path == "../shared/data/cifar10/cifar10-jpeg.npz"
    monkeypatch.chdir(data)
    assert os.path.isfile(amdim_cifar10_cpu.get_config().data.path)


# -- the commands are flags in, one library call out ----------------------------------


def _fake_row(config, batch_size, steps, warmup, profile_dir):
    if batch_size == 3:
        return {"batch": batch_size, "error": "OOM"}
    return {
        "batch": batch_size,
        "images_per_sec": 10.0,
        "step_seconds": 0.2,
        "gflops_per_sec": 1.0,
        "peak_gflops": 2.0,
        "device": "CPU",
        "peak_dtype": "float32",
        "fraction_of_peak": 0.5,
        "peak_memory_gib": 0.1,
    }


def test_benchmark_tables_come_from_the_library(tmp_path, monkeypatch):
    import json

    from amdim_tf.use import benchmark

    monkeypatch.setattr(benchmark, "measure_isolated", _fake_row)
    proc = run_command(
        "benchmark", f"--config={ROOT}/{TINY}", "--batch_sizes=2,3", "--json=b.json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| 2 | 10.0 | 0.200 |" in proc.stdout and "| 3 | failed: OOM |" in proc.stdout
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["batch"] for r in rows] == [2, 3] and rows[1]["error"] == "OOM"
    failed = run_command("benchmark", f"--config={ROOT}/{TINY}", "--batch_sizes=3", cwd=tmp_path)
    assert failed.returncode == 1 and one_error_line(failed).startswith("error: every benchmark")


def test_a_garbled_run_config_is_one_line(tmp_path):
    # A ValueError from json was one line only because every ValueError was.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{garbled")
    proc = run_command("evaluate", f"--encoder={tmp_path / 'run'}", cwd=tmp_path)
    assert "config.json is not valid JSON (" in one_error_line(proc)


def test_edge_cost_threads_are_checked(tmp_path):
    # int() of the flag was a ValueError, one line only through the old catch-all.
    proc = run_command("edge_cost", "--workdir=run", "--threads=1,abc", cwd=tmp_path)
    assert "--threads=1,abc is not allowed; expected integers >= 1" in one_error_line(proc)
