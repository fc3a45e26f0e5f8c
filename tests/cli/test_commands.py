"""The installed commands (amdim_tf/cli/), presets by name (amdim_tf/presets/) and the one
override parser (config_lib.apply_overrides)."""

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, fresh_env, one_error_line, run_command

from amdim_tf import config_lib, presets
from amdim_tf.errors import first_line


def scripts():
    """pyproject.toml's [project.scripts] (tomllib is not in Python 3.10)."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        section = f.read().split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([a-z-]+) = "([a-z_.:]+)"$', section, re.M))


def test_every_command_is_a_cli_main_with_its_tools_shim():
    names = {name.replace("-", "_") for name in scripts()}
    tools = {f[:-3] for f in os.listdir(os.path.join(ROOT, "tools")) if f.endswith(".py")}
    assert {f"amdim_{t}" for t in tools} == names  # a command per tool, a tool per command
    for command, target in scripts().items():
        module, _, function = target.partition(":")
        assert function == "main" and module == f"amdim_tf.cli.{command[len('amdim-') :]}".replace(
            "-", "_"
        )
        assert os.path.isfile(os.path.join(ROOT, *module.split(".")) + ".py"), module


def test_a_preset_name_and_its_file_give_the_same_config():
    assert "amdim_cifar10_cpu" in presets.names() and "cpc" in presets.names()
    by_name = presets.load("amdim_cifar10_cpu:parity")
    by_shim = presets.load(os.path.join(ROOT, "configs", "amdim_cifar10_cpu.py") + ":parity")
    assert by_name.to_dict() == by_shim.to_dict()
    assert by_name.model.ndf == 64  # the parity variant, not the default
    assert presets.load("cpc").cpc.max_offset == 5 and presets.load("cpc:tiny").cpc.max_offset == 3
    with pytest.raises(AttributeError):
        by_name.model.nope = 1  # locked: a typo is an error, not a new key
    assert presets.resolve("configs/cpc.py:tiny") == "configs/cpc.py:tiny"  # a path is a path
    assert presets.resolve("cpc:tiny") == os.path.join(ROOT, "amdim_tf", "presets", "cpc.py:tiny")
    with pytest.raises(ValueError, match="no preset named 'cifar10'; choose one of amdim_cifar10"):
        presets.load("cifar10:tiny")
    with pytest.raises(FileNotFoundError, match="missing.py does not exist"):
        presets.load(os.path.join(ROOT, "configs", "missing.py"))


@pytest.mark.parametrize("variant", [None, "tiny"])
def test_every_packaged_preset_is_valid_and_documented(variant):
    for name in presets.names():
        module = __import__(f"amdim_tf.presets.{name}", fromlist=["get_config"])
        assert "amdim-train --config=" in module.__doc__ or name == "amdim_cifar10_cpu", name
        config_lib.validate(module.get_config(variant))
        assert os.path.isfile(os.path.join(ROOT, "configs", f"{name}.py")), name  # its shim


def test_overrides_are_typed_by_the_key_and_errors_are_one_line():
    c = presets.load("amdim_digits_demo:tiny")
    config_lib.apply_overrides(
        c,
        [
            "model.ndf=16",
            "optim.lr=1",
            "optim.decay_epochs=(3, 4)",
            "data.path=7",
            "data.cache=false",
        ],
    )
    config_lib.apply_overrides(c, {"train.batch_size": 4})
    assert c.model.ndf == 16 and c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
    assert c.optim.decay_epochs == (3, 4) and c.data.path == "7" and c.data.cache is False
    assert c.train.batch_size == 4
    for bad, says in [
        (["data.pth=x"], "no key 'data.pth' in the config (did you mean 'data.path'?)"),
        (
            ["model.ndf=wide"],
            "model.ndf='wide' is not allowed: the config takes a value of type int there",
        ),
        ({"model.ndf": 1.5}, "model.ndf=1.5 is not allowed"),
        (["model=1"], "'model' is a section of the config"),
        (["model.ndf"], "'model.ndf' is not KEY=VALUE"),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)) as e:
            config_lib.apply_overrides(c, bad)
        assert "\n" not in str(e.value), bad
    assert c.model.ndf == 16  # a failed override changes nothing
    with pytest.raises(ValueError, match=r"only data\.\* keys may change"):
        config_lib.apply_overrides(c, ["model.ndf=4"], allowed_prefixes=("data.",))


def test_first_line():
    assert first_line(ValueError("\n  bad value\nmore")) == "bad value"
    assert first_line(KeyError()) == "KeyError" and first_line("") == ""
    assert first_line("abcdef", limit=3) == "abc"


def test_helpshort_lists_the_commands_own_flags_from_any_directory(tmp_path):
    # A new process: absl's help reads the docstring of the process's __main__ module.
    proc = subprocess.run(
        [sys.executable, "-m", "amdim_tf.cli.finetune", "--helpshort"],
        cwd=tmp_path,
        env=fresh_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr  # absl's exit code after help
    out = proc.stdout
    assert "Few-label evaluation" in out  # the command's docstring
    for flag in ("--fractions", "--per_class", "--config.data.KEY", "--max_steps"):
        assert flag in out, flag
    assert "shuffle_buffer" not in out and len(out.splitlines()) < 90  # no config dump


def test_data_overrides_of_a_run_reading_command_are_one_line(tmp_path):
    proc = run_command("evaluate", "--workdir=x", "--config.model.ndf=3", cwd=tmp_path)
    assert proc.returncode == 2  # the one exit code of a user error (amdim_tf/cli)
    assert one_error_line(proc) == (
        "error: --config.model.ndf=3: this command takes --config.data.KEY=VALUE only (other "
        "data; the encoder is the run's), e.g. --config.data.source=folder "
        "--config.data.path=DIR"
    )


@pytest.mark.slow
def test_train_takes_a_preset_name_from_another_directory(tmp_path):
    """Train by preset name outside the checkout: the wheel's case (no configs/ there)."""
    workdir = tmp_path / "run"
    proc = run_command(
        "train",
        "--config=amdim_digits_demo:tiny",
        "--config.train.steps_per_epoch=1",
        "--config.train.verbose=0",
        "--config.train.log_view_pairs=0",
        f"--workdir={workdir}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "completed" in proc.stdout and (workdir / "config.json").exists()
