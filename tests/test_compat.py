"""Every private Keras/TF hook in amdim_tf/compat.py still exists and behaves as assumed.

When an upgrade of keras or tensorflow breaks one, this file fails first, naming it."""

import inspect

import keras
import tensorflow as tf

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
    assert isinstance(compat.strategy_supports_no_merge_call(), bool)


def test_hook_freeze_variables():
    v = tf.Variable(tf.ones([3, 3]))
    fn = tf.function(lambda x: tf.matmul(x, v))
    frozen = compat.freeze_variables(fn.get_concrete_function(tf.TensorSpec([1, 3])))
    assert any(op.type == "MatMul" for op in frozen.graph.get_operations())


def test_hook_xplane_proto():
    space = compat.xplane_proto()()
    assert hasattr(space, "planes")
