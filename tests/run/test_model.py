"""The Keras model: probe isolation, a few steps that lower the loss, failure cases, schedule."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from amdim_tf.methods import AMDIMEncoder, AMDIMObjective
from amdim_tf.run.build import build_model
from amdim_tf.run.callbacks import NonFiniteLossError, StopOnNonFiniteLoss
from amdim_tf.run.model import SelfSupervisedModel
from amdim_tf.run.optim import WarmupStepDecay, make_schedule


def tiny_model(tiny_config, spe=10):
    return build_model(tiny_config, steps_per_epoch=spe, num_classes=10)


def toy_views(n=16, seed=0):
    """n random 'images' and two noisy views of each: learnable correspondence."""
    rng = np.random.RandomState(seed)
    images = rng.rand(n, 32, 32, 3).astype("float32")
    v1 = images + 0.05 * rng.randn(*images.shape).astype("float32")
    v2 = images + 0.05 * rng.randn(*images.shape).astype("float32")
    labels = (np.arange(n) % 10).astype("int32")
    return v1, v2, labels


def test_probe_gradients_never_reach_the_encoder(tiny_config):
    model = tiny_model(tiny_config)
    v1, v2, y = toy_views(4)
    with tf.GradientTape() as tape:
        logged = model.compute_losses((v1, v2), tf.constant(y), training=True)["logged"]
        probe_loss = logged["loss/probe"]
    grads = tape.gradient(
        probe_loss, model.encoder.trainable_variables + model.linear_probe.trainable_variables
    )
    n_enc = len(model.encoder.trainable_variables)
    assert all(g is None for g in grads[:n_enc])
    assert all(g is not None for g in grads[n_enc:])


def test_objective_gradients_reach_the_encoder_not_the_probes(tiny_config):
    model = tiny_model(tiny_config)
    v1, v2, y = toy_views(4)
    with tf.GradientTape() as tape:
        logged = model.compute_losses((v1, v2), tf.constant(y), training=True)["logged"]
        nce = logged["loss/total"]
    grads = tape.gradient(
        nce, model.encoder.trainable_variables + model.linear_probe.trainable_variables
    )
    n_enc = len(model.encoder.trainable_variables)
    assert (
        sum(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads[:n_enc])
        > n_enc // 2
    )
    assert all(g is None for g in grads[n_enc:])


def test_a_few_steps_lower_the_loss(tiny_config):
    tiny_config.optim.lr = 2e-3
    tiny_config.optim.warmup_steps = 1
    model = tiny_model(tiny_config)
    v1, v2, y = toy_views(16)
    ds = tf.data.Dataset.from_tensors(((v1, v2), y)).repeat()
    hist = model.fit(ds, epochs=6, steps_per_epoch=5, verbose=0)
    nce = hist.history["nce/1t7"]
    assert nce[-1] < nce[0] - 0.2, nce
    assert np.isfinite(hist.history["loss/total"]).all()
    for key in (
        "loss/total",
        "nce/1t5",
        "nce/1t7",
        "nce/5t5",
        "loss/reg",
        "probe/linear_acc",
        "probe/mlp_acc",
    ):
        assert key in hist.history


def test_test_step_reports_probe_accuracy(tiny_config):
    model = tiny_model(tiny_config)
    v1, _, y = toy_views(8)
    y[::2] = -1  # unlabelled images must not count
    res = model.evaluate(tf.data.Dataset.from_tensors((v1, y)), verbose=0, return_dict=True)
    assert set(res) == {"probe/linear_acc", "probe/mlp_acc"}
    assert 0.0 <= res["probe/linear_acc"] <= 1.0


def test_zero_labels_in_probe_give_chance_accuracy_on_real_labels(tiny_config):
    """A probe trained on all-zero labels cannot know the classes: it scores at chance
    (it learns to predict class 0, so about the class-0 share)."""
    keras.utils.set_random_seed(0)
    tiny_config.optim.lr = 5e-3
    tiny_config.optim.warmup_steps = 1
    model = tiny_model(tiny_config)
    v1, v2, y = toy_views(20)
    ds = tf.data.Dataset.from_tensors(((v1, v2), np.zeros_like(y))).repeat()
    model.fit(ds, epochs=1, steps_per_epoch=15, verbose=0)
    res = model.evaluate(tf.data.Dataset.from_tensors((v1, y)), verbose=0, return_dict=True)
    assert res["probe/linear_acc"] <= np.mean(y == 0) + 0.05


def test_non_finite_loss_stops_with_the_step(tiny_config):
    model = tiny_model(tiny_config)
    objective = model.objective

    class GoesNaNAtStep2:
        metric_names = objective.metric_names

        def __call__(self, f1, f2, seed_generator=None):
            out = dict(objective(f1, f2, seed_generator=seed_generator))
            bad = model.optimizer.iterations >= 2
            out["total"] = tf.where(bad, tf.constant(np.nan), out["total"])
            return out

    model.objective = GoesNaNAtStep2()
    v1, v2, y = toy_views(4)
    ds = tf.data.Dataset.from_tensors(((v1, v2), y)).repeat()
    with pytest.raises(NonFiniteLossError, match="nan at training step 3"):
        model.fit(ds, epochs=1, steps_per_epoch=5, verbose=0, callbacks=[StopOnNonFiniteLoss()])
    # The NaN step was not applied: two good updates, finite weights.
    assert model.optimizer.iterations.numpy() == 2
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)


def test_weight_decay_is_coupled_l2(tiny_config, monkeypatch):
    """The optimizer receives grad + wd * w (PyTorch Adam's weight_decay), not AdamW's decay."""
    model = tiny_model(tiny_config)
    model.weight_decay = 0.1
    captured = {}

    def zero_grad_losses(views, labels, training=True):
        zero = tf.add_n([tf.reduce_sum(0.0 * v) for v in model.trainable_variables])
        logged = {n: zero for n in model.loss_names}
        y = tf.zeros([8], tf.int32)
        return {
            "loss": zero,
            "logged": logged,
            "labels": y,
            "linear_logits": tf.zeros([8, 10]),
            "mlp_logits": tf.zeros([8, 10]),
            "feats1": None,
        }

    def capture(pairs):
        captured["pairs"] = [(g.numpy(), v.numpy()) for g, v in pairs]

    monkeypatch.setattr(model, "compute_losses", zero_grad_losses)
    monkeypatch.setattr(model.optimizer, "apply_gradients", capture)
    x = np.zeros((4, 32, 32, 3), "float32")
    model.train_step(((x, x), tf.zeros([4], tf.int32)))
    assert len(captured["pairs"]) == len(model.trainable_variables)
    for g, v in captured["pairs"]:
        np.testing.assert_allclose(g, 0.1 * v, rtol=1e-6, atol=1e-8)


def test_warmup_then_step_decay():
    sched = WarmupStepDecay(2e-4, warmup_steps=500, boundaries=(1000, 2000), factor=0.2)
    np.testing.assert_allclose(float(sched(0)), 2e-4 / 500, rtol=1e-6)
    np.testing.assert_allclose(float(sched(499)), 2e-4, rtol=1e-6)
    np.testing.assert_allclose(float(sched(999)), 2e-4, rtol=1e-6)
    np.testing.assert_allclose(float(sched(1000)), 4e-5, rtol=1e-6)
    np.testing.assert_allclose(float(sched(2500)), 8e-6, rtol=1e-6)


def test_cosine_schedule_warms_up_then_reaches_zero_at_the_last_step(tiny_config):
    optim = tiny_config.optim
    optim.lr, optim.warmup_steps, optim.schedule = 1e-3, 100, "cosine"
    sched = make_schedule(optim, steps_per_epoch=250, total_steps=1000)
    lr = [float(sched(s)) for s in (0, 50, 100, 550, 1000, 1500)]
    np.testing.assert_allclose(lr, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    optim.schedule = "step"  # the paper's schedule ignores the run length
    step = make_schedule(optim, steps_per_epoch=250, total_steps=1000)
    assert isinstance(step, WarmupStepDecay)


def test_model_rejects_mismatched_image_sizes(tiny_config):
    tiny_config.data.image_size = 64
    with pytest.raises(ValueError, match="data.image_size=64"):
        tiny_model(tiny_config)


def test_batch_of_one_is_rejected():
    """NCE needs negatives: one image per batch would silently give a zero loss."""
    enc = AMDIMEncoder(32, 4, 16, 1)
    model = SelfSupervisedModel(enc, AMDIMObjective(16, 20.0, 0.05), 10)
    model.build()
    x = np.random.rand(1, 32, 32, 3).astype("float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 2 images"):
        model.compute_losses((x, x), tf.constant([0]), training=True)


class _ObjectiveWithAuxiliaryState(AMDIMObjective):
    """AMDIM plus a stand-in for any method's extra trainable state (not DIM's)."""

    auxiliary_metric = "aux/probe"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.aux = keras.layers.Dense(1, name="aux")
        self.aux.build((None, 16))

    @property
    def auxiliary_variables(self):
        return list(self.aux.trainable_variables)

    def auxiliary_loss(self, feats1, seed_generator):
        r1 = tf.stop_gradient(tf.reshape(feats1["r1"], [-1, 16]))  # [b, D]
        return tf.reduce_mean(tf.square(self.aux(r1) - 1.0))  # []


def test_train_step_updates_any_objectives_auxiliary_state_with_its_own_optimizer(monkeypatch):
    """The generic hook of amdim_tf.methods: the main update leaves the auxiliary
    variables alone, the auxiliary optimizer steps them, and the loss is logged under
    the objective's own metric name."""
    keras.utils.set_random_seed(0)
    enc = AMDIMEncoder(32, 4, 16, 1)
    model = SelfSupervisedModel(enc, _ObjectiveWithAuxiliaryState(16, 20.0, 0.05), 10)
    model.build()
    aux = model.auxiliary_variables
    assert len(aux) == 2 and "aux/probe" in model.loss_names
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.auxiliary_optimizer = keras.optimizers.SGD(0.1)
    main_vars = {}
    apply = model.optimizer.apply_gradients
    monkeypatch.setattr(
        model.optimizer,
        "apply_gradients",
        lambda pairs: apply(list(main_vars.setdefault("pairs", list(pairs)))),
    )
    before = [v.numpy().copy() for v in aux]
    x = np.random.RandomState(0).rand(4, 32, 32, 3).astype("float32")
    logs = model.train_step(((x, x[::-1].copy()), tf.constant([0, 1, 2, 3])))
    assert np.isfinite(float(logs["aux/probe"]))
    assert not {id(v) for v in aux} & {id(v) for _, v in main_vars["pairs"]}
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, aux, strict=True))
    assert int(model.auxiliary_optimizer.iterations.numpy()) == 1
