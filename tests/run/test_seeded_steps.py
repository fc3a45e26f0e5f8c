"""Seeded runs are reproducible across code changes that should not change the maths.

The values below are what two train steps of each method's tiny config gave on
digits with seed 1 before the package was reorganised (commit a6b8e8f, recorded
2026-11-29; the refactor reproduced them bit for bit). A change of
initialisation order, of a loss term or of the data stream moves them by far
more than the tolerance, which only absorbs float rounding of another CPU.
"""

import importlib.util
import os

import keras
import numpy as np
import pytest
from conftest import ROOT

from amdim_tf import data as data_lib
from amdim_tf.run.build import build_model

CONFIGS = {
    "amdim": ("amdim_digits_demo.py", "tiny"),
    "dim_local": ("dim_local.py", "tiny"),
    "dim_global": ("dim_global.py", "tiny"),
    "dim_amdim": ("dim_local.py", "amdim_tiny"),
    "cpc": ("cpc.py", "tiny"),
}
# Running means over two steps of the logged terms, and the sum of the encoder's
# weights after the two updates.
RECORDED = {
    "amdim": {
        "_weights_sum_after_2_steps": 165.28345655634985,
        "loss/probe": 4.645442485809326,
        "loss/total": 20.410381317138672,
        "nce/1t5": 5.746164798736572,
        "nce/1t7": 6.354594707489014,
        "nce/5t5": 7.8952131271362305,
    },
    "cpc": {
        "_weights_sum_after_2_steps": 935.4983616607174,
        "cpc/k2": 6.1842360496521,
        "cpc/k3": 6.0229387283325195,
        "loss/probe": 4.5793776512146,
        "loss/total": 6.1035871505737305,
    },
    "dim_amdim": {
        "_weights_sum_after_2_steps": 154.45386020332444,
        "dim/local": 2.0752437114715576,
        "dim/prior": 0.6903433799743652,
        "loss/probe": 4.846967697143555,
        "loss/total": 2.144278049468994,
    },
    "dim_global": {
        "_weights_sum_after_2_steps": 89.96718108616551,
        "dim/global": 0.14332300424575806,
        "dim/prior": 0.693946897983551,
        "loss/probe": 4.504364013671875,
        "loss/total": 0.8372699022293091,
    },
    "dim_local": {
        "_weights_sum_after_2_steps": 89.82774255314143,
        "dim/local": 1.6408286094665527,
        "dim/prior": 0.7652700543403625,
        "loss/probe": 4.640703201293945,
        "loss/total": 1.7173556089401245,
    },
}


def _config(name):
    path, variant = CONFIGS[name]
    spec = importlib.util.spec_from_file_location("c", os.path.join(ROOT, "configs", path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(variant)
    config.data.source, config.data.path = "digits", ""
    return config


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_two_seeded_steps_reproduce_the_recorded_losses(name):
    config = _config(name)
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, steps_per_epoch=3, num_classes=10)
    data = data_lib.make_pretrain_dataset(config.data, config.train.batch_size, config.seed)
    batch = next(iter(data))
    model.train_step(batch)
    logs = model.train_step(batch)
    got = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in logs.items()}
    got["_weights_sum_after_2_steps"] = float(
        sum(np.sum(np.asarray(v, np.float64)) for v in model.encoder.trainable_variables)
    )
    for key, want in RECORDED[name].items():
        np.testing.assert_allclose(got[key], want, rtol=1e-5, err_msg=f"{name} {key}")
