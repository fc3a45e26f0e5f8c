"""The online kNN monitor: chance for a collapsed encoder, above it for a structured one,
and its value reaches the run's metrics under probe/eval_knn_acc."""

import json
import os
import types

import keras
import numpy as np
import tensorflow as tf

from amdim_tf import config_lib
from amdim_tf.run import callbacks
from amdim_tf.run.knn_monitor import LOG_KEY, KNNMonitor
from amdim_tf.run.loader import untrained_encoder
from amdim_tf.run.workdir import METRICS_FILE

N = 200  # 20 per digit class, from each split


class _Collapsed(keras.Model):
    """Every image -> the same r1: what a collapsed encoder computes."""

    image_size = 32

    def call(self, images, training=None):
        return {"r1": tf.ones([tf.shape(images)[0], 1, 1, 8])}


class _Pixels(keras.Model):
    """r1 = the normalised pixels: structure without training."""

    image_size = 32

    def call(self, images, training=None):
        return {"r1": tf.reshape(images, [tf.shape(images)[0], 1, 1, 32 * 32 * 3])}


def _config():
    c = config_lib.make_tiny(config_lib.base_config())
    c.data.source = "digits"
    return c


def test_collapsed_encoder_scores_chance_and_structured_ones_score_above():
    config = _config()
    monitor = KNNMonitor(config.data, N, seed=3)
    # Measured with seeds 0 and 3: collapsed 0.10 (chance: 10 balanced classes), raw
    # pixels 0.84-0.89, an untrained tiny AMDIM encoder 0.27-0.37 (random features of
    # 8 channels); the bounds leave room for other machines' float rounding.
    assert monitor.accuracy(_Collapsed(name="collapsed")) <= 0.15
    assert monitor.accuracy(_Pixels(name="pixels")) >= 0.6
    structured = monitor.accuracy(untrained_encoder(config))
    assert structured >= 0.2, structured
    # The samples are seeded: the same encoder scores the same every epoch.
    assert monitor.accuracy(untrained_encoder(config)) == structured


def test_the_logger_writes_it_as_probe_eval_knn_acc(tmp_path):
    config = _config()
    model = types.SimpleNamespace(
        encoder=untrained_encoder(config),
        optimizer=types.SimpleNamespace(iterations=tf.Variable(7, dtype=tf.int64)),
    )
    monitor = KNNMonitor(config.data, N)
    logger = callbacks.MetricsLogger(str(tmp_path), global_batch=8, log_every=1)
    logs = {"val_probe/linear_acc": 0.5}
    for cb in (monitor, logger):  # the order fit must be given
        cb.set_model(model)
        cb.on_epoch_end(0, logs)
    logger.close()
    with open(os.path.join(tmp_path, METRICS_FILE)) as f:
        record = json.loads(f.readlines()[-1])
    assert record["step"] == 7
    assert record["probe/eval_knn_acc"] == monitor.last_accuracy > 0.2


def test_off_when_num_examples_is_zero_and_inside_fit(tmp_path):
    from amdim_tf.run.train import train

    config = _config()
    logs = {}
    KNNMonitor(config.data, 0).on_epoch_end(0, logs)
    assert logs == {}
    config.train.log_view_pairs = 0
    config.train.verbose = 0
    _, result = train(config, None, extra_callbacks=[KNNMonitor(config.data, 100)])
    acc = result["history"][0][LOG_KEY]
    assert np.shape(acc) == (1,) and 0.0 <= acc[0] <= 1.0
