"""Distribution and numerics of the train step: 1 vs 2 replicas, global negatives,
mixed precision, XLA on/off.

The replica tests run a MirroredStrategy over the two logical CPU devices that
conftest.py makes before TensorFlow initialises (`two_replica_strategies`).

AMDIM's 5->5 term draws a random r5 location per image: every replica draws the
locations of the whole global batch from the same generator state and keeps its
rows, so 1 and 2 replicas sample the same locations and the replica test uses the
real draws. The negatives test compares two calls of one model, so it fixes the
locations (`fixed_locations`) to compare like with like.
"""

import contextlib
from unittest import mock

import numpy as np
import pytest
from conftest import two_replica_strategies

GLOBAL_BATCH = 8
WEIGHT_DECAY = 0.05  # large enough that decaying once per replica would show


def toy_batch(n=GLOBAL_BATCH, seed=0):
    rng = np.random.RandomState(seed)
    images = rng.rand(n, 32, 32, 3).astype("float32")
    v1 = images + 0.05 * rng.randn(*images.shape).astype("float32")
    v2 = images + 0.05 * rng.randn(*images.shape).astype("float32")
    return v1, v2, (np.arange(n) % 10).astype("int32")


def fixed_locations(shape, minval=0, maxval=None, seed=None, dtype="int32"):
    """Stands in for keras.random.randint in AMDIMObjective: the r5 location of each
    image and view is a fixed function of the image's index in the global batch."""
    import tensorflow as tf

    index = tf.range(shape[1])  # [B] global indices
    return tf.stack([(7 * index + 1) % 25, (11 * index + 3) % 25])  # [2, B]


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


# -- 1 vs 2 replicas ----------------------------------------------------------


def test_one_and_two_replicas_give_the_same_loss_and_gradients():
    """Same global batch and weights, synchronized BN: MirroredStrategy over 2 CPUs
    matches one replica in the objective's loss, the encoder's summed gradients and
    one real `fit` step of the encoder (SGD with lr 1, so the update is minus the
    gradient plus the coupled decay). The online probes are left out: their dropout
    draws differ by design and the MLP probe's BN is per replica."""
    out = _measure("replicas")
    assert out["replicas"] == [1, 2]
    # Measured: the losses agree to 2e-7 relative, the gradients to 1.7e-4 of the
    # largest (float32 sums in another order: sync-BN moments as E[x^2] - E[x]^2,
    # oneDNN kernels for batch 4 vs 8). In float64 the gap falls to 2e-8, so it is
    # round-off; without synchronized BN it is 0.22, so 1e-3 still tells them apart.
    assert abs(out["loss_1"] - out["loss_2"]) < 1e-5 * abs(out["loss_1"]), out
    assert out["grad_rel_err"] < 1e-3, out
    assert abs(out["fit_loss_1"] - out["fit_loss_2"]) < 1e-5 * abs(out["fit_loss_1"]), out
    assert out["update_rel_err"] < 1e-3, out
    assert out["update_norm"] > 0


def test_negatives_span_the_global_batch():
    """With 2 replicas the NCE ranks each positive against the whole global batch;
    computing it per replica (no gather) gives a different, easier loss."""
    out = _measure("negatives")
    gathered, local = out["gathered"], out["local"]
    assert abs(gathered - out["one_replica"]) < 1e-5 * abs(gathered), out
    # Half the negatives: at init the three NCE terms drop by ~0.9 each (measured
    # 15.31 gathered vs 12.52 local); round-off is 1e-5 of that.
    assert gathered - local > 1.0, out


# -- precision and compilation (in process) ----------------------------------


def _losses_with(config, weights=None):
    import tensorflow as tf

    from amdim_tf.run.build import build_model

    model = build_model(config, steps_per_epoch=10, num_classes=10)
    if weights is not None:
        model.set_weights(weights)
    v1, v2, y = toy_batch()
    with mock.patch("keras.random.randint", fixed_locations):
        out = model.compute_losses((v1, v2), tf.constant(y), training=True)
    loss, logged = out["loss"], out["logged"]
    return model, float(loss), {k: float(v) for k, v in logged.items()}


def test_mixed_bfloat16_loss_is_close_to_float32(tiny_config):
    import keras

    tiny_config.model.synchronized_bn = True
    ref, _, terms32 = _losses_with(tiny_config)
    tiny_config.precision = "mixed_bfloat16"
    model, _, terms16 = _losses_with(tiny_config, ref.get_weights())
    assert keras.config.dtype_policy().name == "float32"  # the policy did not leak
    assert model.encoder.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    # bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per op); the
    # features pass a dozen rounded layers, then the scores are float32 dot products
    # of rounded features, so each NCE term may move by a few tenths of a percent.
    # Measured: 0.07% on the objective, at most 0.12% on a term; 1% leaves room for
    # other CPUs' kernels. (The probes are left out: their dropout draws differ.)
    for k in ("loss/total", "nce/1t5", "nce/1t7", "nce/5t5"):
        assert abs(terms16[k] - terms32[k]) < 0.01 * abs(terms32[k]), (k, terms16[k], terms32[k])


def test_mixed_float16_steps_stay_finite(tiny_config):
    import keras
    import tensorflow as tf

    from amdim_tf.run.build import build_model

    tiny_config.precision = "mixed_float16"
    model = build_model(tiny_config, steps_per_epoch=10, num_classes=10)
    assert keras.config.dtype_policy().name == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    v1, v2, y = toy_batch()
    ds = tf.data.Dataset.from_tensors(((v1, v2), y)).repeat()
    hist = model.fit(ds, epochs=1, steps_per_epoch=4, verbose=0)
    assert np.isfinite(hist.history["loss/total"]).all(), hist.history
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
    # A step whose scaled gradients overflow float16 is skipped (and the scale halved);
    # most of these must go through.
    assert int(model.optimizer.iterations) >= 2


@pytest.mark.parametrize("jit_compile", [False, True])
def test_train_steps_with_and_without_xla(tiny_config, jit_compile):
    import tensorflow as tf

    from amdim_tf.run.build import build_model

    tiny_config.jit_compile = jit_compile
    model = build_model(tiny_config, steps_per_epoch=10, num_classes=10)
    assert model.jit_compile is jit_compile
    v1, v2, y = toy_batch()
    ds = tf.data.Dataset.from_tensors(((v1, v2), y)).repeat()
    hist = model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(hist.history["loss/total"]).all()
    assert int(model.optimizer.iterations) == 2


# -- the replica measurements ---------------------------------------------------


def _tiny_config():
    from amdim_tf import config_lib

    c = config_lib.make_tiny(config_lib.base_config())
    c.data.source = "digits"
    c.model.synchronized_bn = True
    c.optim.weight_decay = WEIGHT_DECAY
    return c


def _build(strategy, weights=None, sgd=False):
    import keras

    from amdim_tf.run.build import build_model

    with strategy.scope():
        model = build_model(_tiny_config(), steps_per_epoch=10, num_classes=10)
        if sgd:
            # lr 1: the update is exactly minus the (all-reduced) gradient.
            model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=False)
            model.optimizer.build(model.trainable_variables)
    if weights is not None:
        model.set_weights(weights)
    return model


def _loss_and_grads(strategy, model, v1, v2, y):
    """Mean objective loss over replicas and the sum over replicas of d(loss / R)/dw
    for the encoder's variables (the probes, with dropout and per-replica BN, are
    random and never reach the encoder)."""
    import tensorflow as tf

    from amdim_tf import distribute

    n = strategy.num_replicas_in_sync
    b = GLOBAL_BATCH // n
    shards = lambda a: strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(
            a[ctx.replica_id_in_sync_group * b : (ctx.replica_id_in_sync_group + 1) * b]
        )
    )

    def step(x1, x2, labels):
        with tf.GradientTape() as tape:
            logged = model.compute_losses((x1, x2), labels, training=True)["logged"]
            loss = logged["loss/total"]
            scaled = loss / distribute.num_replicas()
        variables = model.encoder.trainable_variables
        grads = tape.gradient(scaled, variables)
        return loss, [
            tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables, strict=True)
        ]

    loss, grads = tf.function(lambda a, c, d: strategy.run(step, args=(a, c, d)))(
        shards(v1), shards(v2), shards(y)
    )
    loss = strategy.reduce("MEAN", loss, axis=None)
    grads = [strategy.reduce("SUM", g, axis=None) for g in grads]
    return float(loss), [g.numpy() for g in grads]


def _fit_step(strategy, weights, v1, v2, y):
    import tensorflow as tf

    model = _build(strategy, weights, sgd=True)
    variables = model.encoder.trainable_variables
    before = [v.numpy() for v in variables]
    ds = tf.data.Dataset.from_tensors(((v1, v2), y)).repeat()  # Keras splits the global batch
    hist = model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)
    update = [a - v.numpy() for a, v in zip(before, variables, strict=True)]
    return hist.history["loss/total"][0], update


def _measure(mode):
    """The measurements one replica test checks (dict)."""
    import keras

    from amdim_tf import distribute

    keras.utils.set_random_seed(0)
    one, two = two_replica_strategies()
    v1, v2, y = toy_batch()
    out = {"replicas": [one.num_replicas_in_sync, two.num_replicas_in_sync]}
    # Real location draws where one model per strategy is called once; fixed ones
    # where one model is called twice (its generator has moved on by the second call).
    fixed = mock.patch("keras.random.randint", fixed_locations)
    with fixed if mode == "negatives" else contextlib.nullcontext():
        ref = _build(one)
        weights = ref.get_weights()
        model2 = _build(two, weights)
        loss1, grads1 = _loss_and_grads(one, ref, v1, v2, y)
        if mode == "replicas":
            loss2, grads2 = _loss_and_grads(two, model2, v1, v2, y)
            fit1, update1 = _fit_step(one, weights, v1, v2, y)
            fit2, update2 = _fit_step(two, weights, v1, v2, y)
            flat = lambda xs: np.concatenate([x.ravel() for x in xs])
            out.update(
                loss_1=loss1,
                loss_2=loss2,
                grad_rel_err=rel_err(flat(grads2), flat(grads1)),
                fit_loss_1=fit1,
                fit_loss_2=fit2,
                update_rel_err=rel_err(flat(update2), flat(update1)),
                update_norm=float(np.linalg.norm(flat(update1))),
            )
        else:
            gathered, _ = _loss_and_grads(two, model2, v1, v2, y)
            with mock.patch.object(distribute, "gather_global", lambda x: (x, 0)):
                local, _ = _loss_and_grads(two, model2, v1, v2, y)
            out.update(one_replica=loss1, gathered=gathered, local=local)
    return out
