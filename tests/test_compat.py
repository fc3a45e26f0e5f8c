"""Every private Keras/TF hook in amdim_tf/compat.py still exists and behaves as assumed.

When an upgrade of keras or tensorflow breaks one, this file fails first, naming it."""

import inspect

import keras
import numpy as np
import tensorflow as tf
from conftest import two_replica_strategies

from amdim_tf import compat


def test_every_hook_is_listed_and_tested():
    tested = {name[len("test_") :] for name in globals() if name.startswith("test_hook_")}
    assert len(tested) == len(compat.HOOKS), (sorted(tested), compat.HOOKS)


def test_hook_maybe_symbolic_build():
    params = inspect.signature(keras.Model._maybe_symbolic_build).parameters
    assert {"iterator", "data_batch"} <= set(params), params

    calls = []

    class Probe(keras.Model):
        def call(self, x):
            return x

    parent = Probe._maybe_symbolic_build
    Probe._maybe_symbolic_build = lambda self, **kw: calls.append(kw)
    compat.skip_symbolic_build_when_built(Probe)
    model = Probe()
    model.built = False
    model._maybe_symbolic_build(iterator=None, data_batch=1)
    assert calls == [{"iterator": None, "data_batch": 1}]  # unbuilt: defers to Keras
    model.built = True
    model._maybe_symbolic_build(iterator=None, data_batch=2)
    assert len(calls) == 1  # built, no optimizer: skipped
    Probe._maybe_symbolic_build = parent


def test_hook_flatten_layers():
    inner = keras.layers.Dense(2)
    model = keras.Sequential([keras.Input((3,)), keras.Sequential([inner])])
    assert inner in list(model._flatten_layers())
    assert inner in compat.nested_layers(model) and model not in compat.nested_layers(model)
    assert compat.all_layers_built(model)


def test_hook_seed_generator_states():
    class WithSeed(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.gen = keras.random.SeedGenerator(3, name="objective_seed")

    model = keras.Sequential([keras.Input((2,)), WithSeed()])
    states = compat.seed_generator_states(model)
    assert len(states) == 1 and states[0].shape == (2,)


def test_hook_in_multi_worker_mode():
    assert compat.in_multi_worker_mode(tf.distribute.get_strategy()) is False


def test_hook_strategy_supports_no_merge_call():
    # distribute.apply_if_finite relies on both answers: no strategy applies in the replica
    # context, a MirroredStrategy (which needs merge_call) takes the merge_call branch.
    _, mirrored = two_replica_strategies()
    assert compat.strategy_supports_no_merge_call() is True
    with mirrored.scope():
        assert compat.strategy_supports_no_merge_call() is False


def test_hook_freeze_variables():
    v = tf.Variable(tf.ones([3, 3]))
    fn = tf.function(lambda x: tf.matmul(x, v))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, 3]))
    frozen = compat.freeze_variables(concrete)
    ops = lambda f: {op.type for op in f.graph.get_operations()}
    # The variable read becomes a constant (what FLOP counting needs), the maths stays.
    assert "ReadVariableOp" in ops(concrete) and "ReadVariableOp" not in ops(frozen)
    assert not frozen.captured_inputs and "MatMul" in ops(frozen)
    x = tf.constant([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(frozen(x)[0], concrete(x))


def test_hook_xplane_proto():
    space = compat.xplane_proto()()
    assert hasattr(space, "planes")
