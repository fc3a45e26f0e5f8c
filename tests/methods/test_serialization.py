"""Every class registered as Keras-serializable round-trips: get_config/from_config, and
`.keras` save/load for the encoders (what users load as a backbone)."""

import numpy as np
import pytest
import tensorflow as tf
from keras import saving

from amdim_tf.methods import AMDIMEncoder, CPCEncoder, CPCObjective, DIMEncoder, DIMObjective
from amdim_tf.methods.amdim.encoder import ConvReLU, ResidualBlock, ResidualUnit, RKHSHead
from amdim_tf.methods.cpc.encoder import CausalConvBlock
from amdim_tf.methods.nn import NoisyIdentity
from amdim_tf.run.optim import WarmupStepDecay

LAYERS = [
    (ConvReLU, dict(filters=4, kernel_size=3, strides=2, reflect_pad=1), (2, 9, 9, 3)),
    (ResidualUnit, dict(filters=6, kernel_size=2, strides=2, use_bn=True), (2, 8, 8, 4)),
    (ResidualUnit, dict(filters=3, kernel_size=2, strides=1), (2, 8, 8, 4)),  # learned shortcut
    (ResidualBlock, dict(filters=6, kernel_size=3, strides=1, depth=2), (2, 7, 7, 4)),
    (RKHSHead, dict(n_rkhs=8, use_bn=True), (2, 5, 5, 4)),
    (CausalConvBlock, dict(kernel_size=3), (2, 7, 7, 8)),
]
ENCODERS = [
    (AMDIMEncoder, dict(image_size=32, ndf=4, n_rkhs=8, n_depth=1, use_bn=True)),
    (DIMEncoder, dict(image_size=32, ndf=4, n_rkhs=8, fc_units=16)),
    (CPCEncoder, dict(image_size=32, ndf=4, n_rkhs=8, context_blocks=1)),
]


def _registered(obj):
    """The registered name of obj's class, and that it resolves back to that class."""
    name = saving.get_registered_name(type(obj))
    assert name.startswith("amdim_tf>"), f"{type(obj).__name__} is not registered"
    assert saving.get_registered_object(name) is type(obj)


@pytest.mark.parametrize("cls, kwargs, shape", LAYERS, ids=lambda x: getattr(x, "__name__", ""))
def test_layers_round_trip_through_their_config(cls, kwargs, shape):
    layer = cls(**kwargs, name="probe")
    x = tf.random.normal(shape, seed=1)
    y = layer(x)
    _registered(layer)
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), y, atol=1e-6)


@pytest.mark.parametrize("cls, kwargs", ENCODERS, ids=lambda x: getattr(x, "__name__", ""))
def test_encoders_round_trip_through_a_keras_file(cls, kwargs, tmp_path):
    enc = cls(**kwargs, name="encoder")
    enc.build((None, 32, 32, 3))
    _registered(enc)
    assert cls.from_config(enc.get_config()).get_config() == enc.get_config()
    path = str(tmp_path / "encoder.keras")
    enc.save(path)
    loaded = saving.load_model(path)
    assert type(loaded) is cls
    x = tf.random.normal((2, 32, 32, 3), seed=2)
    want, got = enc(x, training=False), loaded(x, training=False)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5, err_msg=k)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DIMObjective(8, (8, 8, 4), "nce", 1.0, 1.0, 0.5, critic_units=8, summary_width=4,
                             disc_hidden=(8, 4)),
        lambda: CPCObjective(8, 7, 2, 3),
    ],
    ids=["DIMObjective", "CPCObjective"],
)  # fmt: skip
def test_objectives_round_trip_through_their_config(make):
    objective = make()
    _registered(objective)
    clone = type(objective).from_config(objective.get_config())
    assert clone.get_config() == objective.get_config()
    assert [v.shape for v in clone.weights] == [v.shape for v in objective.weights]


def test_schedule_and_initializer_round_trip():
    schedule = WarmupStepDecay(1e-3, warmup_steps=10, boundaries=(20, 30), factor=0.5)
    _registered(schedule)
    clone = saving.deserialize_keras_object(saving.serialize_keras_object(schedule))
    steps = np.arange(0, 40, 3)
    np.testing.assert_allclose([clone(s) for s in steps], [schedule(s) for s in steps])

    init = NoisyIdentity(seed=3)
    _registered(init)
    clone = saving.deserialize_keras_object(saving.serialize_keras_object(init))
    np.testing.assert_array_equal(clone((1, 1, 4, 6)), init((1, 1, 4, 6)))
    assert np.all(np.diag(np.asarray(init((4, 6)))) == 1.0)
