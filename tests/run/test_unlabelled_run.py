"""Pretraining on unlabelled images alone (issue 32): `data.unlabeled_path` without
`data.path` trains, says in one line that the probes and the kNN monitor are off, and the
label-free health monitors still run."""

import os

import pytest
from conftest import tiny_run_config
from photo_folder import make_photos

from amdim_tf.run import train as train_lib
from amdim_tf.run.workdir import METRICS_FILE
from amdim_tf.use.report import read_metrics


def test_unlabeled_path_alone_pretrains_with_health_but_no_probes(tmp_path, capsys):
    config = tiny_run_config()
    config.data.source, config.data.path = "folder", ""
    config.data.unlabeled_path = make_photos(tmp_path / "photos")
    config.train.knn_examples = 100  # asked for, but there are no labels to score it on
    config.train.health_examples = 8
    workdir = str(tmp_path / "run")
    _, result = train_lib.train(config, workdir)
    assert result["status"] == "completed"
    assert capsys.readouterr().out.count("online probes and the kNN monitor are off") == 1
    keys = {k for r in read_metrics(os.path.join(workdir, METRICS_FILE)) for k in r}
    assert any(k.startswith("health/") for k in keys), keys
    assert not any(k.startswith("probe/eval_") for k in keys), keys


def test_a_failed_start_leaves_no_empty_work_directory(tmp_path):
    config = tiny_run_config()
    config.data.source, config.data.path = "folder", str(tmp_path / "no_such_photos")
    workdir = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="no_such_photos"):
        train_lib.train(config, str(workdir))
    assert not workdir.exists()
