"""Shared test set-up: one pytest process, quiet TF, oneDNN on, a tiny config."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: heavier test, still part of the default suite")


@pytest.fixture
def tiny_config():
    from amdim_tf import config_lib

    c = config_lib.make_tiny(config_lib.base_config())
    c.data.source = "digits"
    return c
