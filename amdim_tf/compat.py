"""Every private Keras / TensorFlow hook the project relies on, in one place.

Each hook works around a gap in the public API of the pinned versions (keras
3.15, tensorflow 2.21) and says why. `tests/test_compat.py` checks that every
one still exists and behaves as assumed, so an upgrade that breaks one fails
there, loudly, instead of somewhere deep in a training run. `HOOKS` lists them
for that test.
"""

import keras
import tensorflow as tf

HOOKS = (
    "keras.Model._maybe_symbolic_build",
    "keras.Model._flatten_layers",
    "SeedGenerator state variables named 'seed_generator_state' (found by path)",
    "tf.distribute Strategy.extended._in_multi_worker_mode",
    "tf.__internal__.distribute.strategy_supports_no_merge_call",
    "tensorflow.python.framework.convert_to_constants (benchmark FLOP count)",
    "tensorflow.tsl.profiler.protobuf.xplane_pb2 (benchmark profile reader)",
)


def nested_layers(model: keras.Model) -> list:
    """Every layer nested in `model`, at any depth, not `model` itself (private
    `_flatten_layers`: Keras has no public recursive walk)."""
    return list(model._flatten_layers(include_self=False))


def all_layers_built(model: keras.Model) -> bool:
    """True when `model` and every layer nested in it are built."""
    return model.built and all(layer.built for layer in nested_layers(model))


def skip_symbolic_build_when_built(model_cls):
    """Class decorator: `fit`/`evaluate` must not pull a batch to build a built model.

    Under a tf.distribute strategy, Keras' TF trainer (3.15) pulls one batch off the
    iterator at the start of every fit/evaluate to build the model symbolically
    (private `_maybe_symbolic_build`): that batch is never trained on, and under
    MultiWorkerMirroredStrategy reducing its nested ((v1, v2), y) structure fails
    ("Attempt to convert a value (PerReplica...)"). Our models are built with every
    variable and optimizer slot before `fit`, so there is nothing left to build.
    """
    parent = model_cls._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        optimizer = getattr(self, "optimizer", None)  # None before compile()
        if all_layers_built(self) and (optimizer is None or optimizer.built):
            return None
        return parent(self, iterator=iterator, data_batch=data_batch)

    model_cls._maybe_symbolic_build = _maybe_symbolic_build
    return model_cls


def seed_generator_states(model: keras.Model) -> list:
    """The state variables of every keras.random.SeedGenerator inside `model`, in order.

    SeedGenerators are not tf.train-trackable, so a checkpoint binds their state
    variables by position; Keras names them "seed_generator_state" (found by path).
    """
    return [v for v in model.variables if "seed_generator" in v.path]


def in_multi_worker_mode(strategy) -> bool:
    """True when replicas span several hosts (Keras and TF use the same private test)."""
    return bool(strategy.extended._in_multi_worker_mode())


def strategy_supports_no_merge_call() -> bool:
    """True when apply_gradients may run in the replica context without merge_call."""
    return bool(tf.__internal__.distribute.strategy_supports_no_merge_call())


def freeze_variables(concrete_function):
    """A concrete function with its variables turned into constants (for FLOP counting)."""
    from tensorflow.python.framework import convert_to_constants

    return convert_to_constants.convert_variables_to_constants_v2(concrete_function)


def xplane_proto():
    """The XSpace protobuf class of tf.profiler traces (`*.xplane.pb`)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    return xplane_pb2.XSpace
