"""Shared test set-up: one pytest process, quiet TF, oneDNN on, a tiny config."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: heavier test, still part of the default suite")


def run_tool(name, *args, cwd=ROOT, env_extra=None, timeout=300, wait=True):
    """Runs tools/<name> as a user would: a fresh Python, quiet TF, no PYTHONPATH.

    Returns the finished CompletedProcess (stdout/stderr as text), or with wait=False
    the running Popen (stderr merged into stdout).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.update(env_extra or {})
    cmd = [sys.executable, os.path.join(ROOT, "tools", name), *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tiny_config():
    from amdim_tf import config_lib

    c = config_lib.make_tiny(config_lib.base_config())
    c.data.source = "digits"
    return c


def tiny_run_config():
    """The tiny digits config of `tiny_run` (2 steps, no view-pair image, silent)."""
    from amdim_tf import config_lib

    c = config_lib.make_tiny(config_lib.base_config())
    c.data.source = "digits"
    c.train.steps_per_epoch = 2
    c.train.log_view_pairs = 0
    c.train.verbose = 0
    return c


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A work directory of a finished tiny run, trained once per test session (read only)."""
    from amdim_tf.run.train import train

    workdir = str(tmp_path_factory.mktemp("tiny_run"))
    train(tiny_run_config(), workdir)
    return workdir
