"""Label-free health monitors: formulas equal direct NumPy, collapsed encoders trip the
alarm, a trained tiny encoder does not, and stop_on_collapse stops after a checkpoint."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from amdim_tf.run import health, hparams
from amdim_tf.run.loader import open_encoder
from amdim_tf.run.train import train
from amdim_tf.run.workdir import METRICS_FILE


def _unit(z):
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_formulas_equal_direct_numpy():
    rng = np.random.default_rng(0)
    z1 = rng.standard_normal((12, 5))
    z2 = z1 + 0.1 * rng.standard_normal((12, 5))
    # RankMe from the eigenvalues of Z^T Z (singular values = their square roots).
    s = np.sqrt(np.clip(np.linalg.eigvalsh(z1.T @ z1), 0, None))
    p = s / s.sum() + 1e-7
    assert health.effective_rank(z1) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
    u, v = _unit(z1), _unit(z2)
    assert health.alignment(z1, z2) == pytest.approx(
        np.mean([np.sum((u[i] - v[i]) ** 2) for i in range(12)]), rel=1e-9
    )
    potentials = [
        np.exp(-2.0 * np.sum((u[i] - u[j]) ** 2)) for i in range(12) for j in range(i + 1, 12)
    ]
    assert health.uniformity(z1) == pytest.approx(np.log(np.mean(potentials)), rel=1e-9)
    stds = [np.sqrt(np.mean((u[:, d] - u[:, d].mean()) ** 2)) for d in range(5)]
    assert health.dimension_std(z1) == pytest.approx(np.mean(stds), rel=1e-9)
    # The ends of the scales: orthogonal rows have full rank; one direction has rank 1.
    assert health.effective_rank(np.eye(6)) == pytest.approx(6.0, rel=1e-5)
    assert health.effective_rank(np.outer(rng.random(9) + 0.5, rng.random(6))) == pytest.approx(
        1.0, abs=1e-3
    )


class _Collapsed(keras.Model):
    """r1 = a(x) * w: every image on one line (or, with scale_by_input=False, one point)."""

    def __init__(self, dim=32, scale_by_input=True):
        super().__init__()
        self.w = tf.constant(np.random.default_rng(0).random(dim), tf.float32)
        self.scale_by_input = scale_by_input

    def call(self, images, training=False):
        a = (
            tf.reduce_mean(images, axis=[1, 2, 3])
            if self.scale_by_input
            else 0 * images[:, 0, 0, 0]
        )
        r1 = (a[:, None] + 2.0) * self.w[None, :]  # [B, D]
        return {"r1": r1[:, None, None, :]}


@pytest.mark.parametrize("scale_by_input", [True, False], ids=["one_dimension", "constant"])
def test_a_collapsed_encoder_trips_the_alarm_and_a_trained_one_does_not(
    tiny_config, tiny_run, scale_by_input
):
    monitor = health.HealthMonitor(tiny_config.data, 64, encoder=_Collapsed(32, scale_by_input))
    monitor.on_epoch_end(0)
    assert monitor.collapsed and monitor.last["health/rank"] < 1.01
    assert monitor.last["health/uniformity"] > -0.05  # every pair at distance ~0
    assert not monitor.stopped  # stop_on_collapse is off

    encoder = open_encoder(tiny_run).encoder
    trained = health.HealthMonitor(tiny_config.data, 64, encoder=encoder)
    trained.on_epoch_end(0)
    # Observed: rank 2.61 of D=32 after the tiny run's 2 steps (uncentred features: the
    # mean direction dominates early); the floor is max(2, 0.01 x 32) = 2.
    assert not trained.collapsed, trained.last
    assert trained.last["health/rank"] > health.rank_threshold(32, 0.01)


def test_stop_on_collapse_stops_after_the_epoch_checkpoint(tiny_config, tmp_path):
    c = tiny_config
    c.train.epochs = 3
    c.train.steps_per_epoch = 2
    c.train.checkpoint_every_steps = 0
    c.train.log_view_pairs = 0
    c.train.verbose = 0
    c.train.health_examples = 32
    c.train.collapse_rank_fraction = 1.0  # any encoder is "collapsed": the alarm fires
    c.train.stop_on_collapse = True
    workdir = str(tmp_path / "run")
    _, result = train(c, workdir)
    assert result["status"].startswith("stopped at a representation collapse")
    recorded = hparams.read_hparams(workdir)  # the HParams tab's view of this run
    assert recorded["train.stop_on_collapse"] is True and recorded["model.ndf"] == 8
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("-2")
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        records = [json.loads(line) for line in f]
    health_records = [r for r in records if "health/rank" in r]
    assert len(health_records) == 1 and health_records[0]["step"] == 2
    assert set(health_records[0]) >= {
        "health/rank_fraction",
        "health/alignment",
        "health/uniformity",
        "health/dim_std",
    }


def test_the_alarm_threshold_is_bounded_by_the_rank_the_sample_can_show():
    # The fraction applies to min(N, D): 36 images cannot show a rank of 0.01 x 4096.
    assert health.rank_threshold(4096, 0.01, num_examples=36) == 2.0
    assert health.rank_threshold(4096, 0.5, num_examples=36) == pytest.approx(18.0)
    assert health.rank_threshold(32, 0.5, num_examples=512) == pytest.approx(16.0)
    assert health.rank_threshold(32, 0.01) == 2.0  # the sample size unknown: D bounds it
    # Two images can show a rank of at most 2, which the floor of 2 already is.
    assert health.rank_threshold(4096, 0.01, num_examples=2) is None
    assert health.rank_threshold(2, 0.01, num_examples=512) is None


class _Healthy(keras.Model):
    """r1 = the image's pixels tiled to D: as varied as the images, D = 4096."""

    def call(self, images, training=False):
        flat = tf.reshape(images, [tf.shape(images)[0], -1])  # [B, S*S*3]
        r1 = tf.tile(flat, [1, 2])[:, :4096]  # [B, 4096]
        return {"r1": r1[:, None, None, :]}


def test_a_small_sample_of_a_wide_encoder_does_not_stop_a_healthy_run(tiny_config, caplog):
    # 36 images, n_rkhs = 4096, fraction 0.01: the old floor 40.96 > 36 fired every epoch.
    monitor = health.HealthMonitor(
        tiny_config.data, 36, min_rank_fraction=0.01, stop_on_collapse=True, encoder=_Healthy()
    )
    monitor.on_epoch_end(0)
    assert monitor.last["health/rank"] > 2 and not monitor.collapsed and not monitor.stopped
    # Two images cannot tell a collapse: said once (not at every epoch), never an alarm.
    tiny = health.HealthMonitor(
        tiny_config.data, 2, min_rank_fraction=0.01, stop_on_collapse=True, encoder=_Healthy()
    )
    with caplog.at_level("WARNING"):
        tiny.on_epoch_end(0)
        tiny.on_epoch_end(1)
    assert not tiny.collapsed and not tiny.stopped
    told = [r.getMessage() for r in caplog.records if "too small" in r.getMessage()]
    assert len(told) == 1 and "health_examples=2" in told[0], told
    assert not any("COLLAPSE" in r.getMessage() for r in caplog.records)
