"""The self-supervised Keras model: encoder + objective + online probes, with a custom train_step.

Bachman, Hjelm & Buchwalter (2019) §3 and the official `task_self_supervised.py`:
each step encodes two augmented views of the same images, minimises the
objective (AMDIM's multiscale InfoNCE by default) plus the online probes'
cross-entropy in one Adam update, as the official code does. The probes read
`stop_gradient(flatten(r1))`, so they never teach the encoder. The step knows no
method by name: an objective's auxiliary state (the protocol in
`amdim_tf.methods`) is stepped through one generic hook.
"""

import keras
import tensorflow as tf

from amdim_tf import compat, distribute
from amdim_tf.methods.features import flat_global
from amdim_tf.run.probes import linear_probe, mlp_probe, probe_xent


# Not registered as Keras-serializable: it holds a training objective and two
# optimizers and is saved as a tf.train checkpoint (workdir.RunCheckpoint); what
# users save and load as .keras files is its encoder.
@compat.skip_symbolic_build_when_built
class SelfSupervisedModel(keras.Model):
    """Encoder trained by a two-view objective, with linear and MLP online probes.

    Args:
        encoder: a built model mapping images to a dict with at least
            `methods.features.GLOBAL` ("r1").
        objective: callable (feats1, feats2, seed_generator=...) -> dict of float32
            scalars with "total" and one per `metric_names` (see `amdim_tf.methods`).
        num_classes: classes of the online probes.
        weight_decay: coupled L2 added to every gradient (PyTorch Adam's
            `weight_decay`, as the official code).
        seed: seed of the model's own randomness (e.g. the 5->5 source location).

    Train data: ((view1, view2), labels) with labels [B] int, -1 = unlabelled.
    Test data: (images, labels): probe accuracy on clean images.

    An objective with auxiliary state exposes `auxiliary_variables`,
    `auxiliary_loss(feats1, seed_generator)` and `auxiliary_metric`; those
    variables are excluded from the main update and trained in the same step by
    `auxiliary_optimizer` (set by `run.build.build_model`).
    """

    auxiliary_optimizer = None

    def __init__(
        self,
        encoder: keras.Model,
        objective: keras.layers.Layer,
        num_classes: int,
        weight_decay: float = 0.0,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.objective = objective
        self.num_classes = num_classes
        self.weight_decay = weight_decay
        self.seed_generator = keras.random.SeedGenerator(seed, name="objective_seed")
        dim = encoder.n_rkhs
        self.linear_probe = linear_probe(dim, num_classes)
        self.mlp_probe = mlp_probe(dim, num_classes)
        self.loss_names = ("loss/total",) + tuple(objective.metric_names) + ("loss/probe",)
        if self.auxiliary_variables:
            self.loss_names += (objective.auxiliary_metric,)
        self._loss_trackers = {
            n: keras.metrics.Mean(name=n.replace("/", "_")) for n in self.loss_names
        }
        self._acc_trackers = {
            "probe/linear_acc": keras.metrics.SparseCategoricalAccuracy(name="linear_acc"),
            "probe/mlp_acc": keras.metrics.SparseCategoricalAccuracy(name="mlp_acc"),
        }

    @property
    def auxiliary_variables(self) -> list:
        """The objective's variables that the main update leaves to `auxiliary_optimizer`."""
        return list(getattr(self.objective, "auxiliary_variables", None) or [])

    @property
    def metrics(self):
        return list(self._loss_trackers.values()) + list(self._acc_trackers.values())

    def build(self, input_shape=None) -> None:
        size = self.encoder.image_size
        self.encoder.build((None, size, size, 3))
        self.linear_probe.build((None, self.encoder.n_rkhs))
        self.mlp_probe.build((None, self.encoder.n_rkhs))

    def call(self, images, training=False):
        """Encoder features plus the probes' logits for `images`."""
        feats = self.encoder(images, training=training)
        r1 = tf.stop_gradient(flat_global(feats))  # [B, D]
        return dict(
            feats,
            linear_logits=self.linear_probe(r1, training=training),
            mlp_logits=self.mlp_probe(r1, training=training),
        )

    def compute_losses(self, views: tuple, labels: tf.Tensor, training: bool = True) -> dict:
        """All loss terms of one step.

        Returns a dict: "loss" (what the step minimises: objective + probes),
        "logged" (dict of scalars for the metrics), "labels" [2b] and the probes'
        "linear_logits" / "mlp_logits" [2b, K] on both views, "feats1" (view 1's
        encoder outputs, for an objective's `auxiliary_loss`).
        """
        x1, x2 = views
        feats1 = self.encoder(x1, training=training)
        feats2 = self.encoder(x2, training=training)
        terms = self.objective(feats1, feats2, seed_generator=self.seed_generator)
        # Probes never teach the encoder: their input is cut from the graph.
        r1 = tf.stop_gradient(
            tf.concat([flat_global(feats1), flat_global(feats2)], axis=0)
        )  # [2b, D]
        y = tf.concat([labels, labels], axis=0)  # [2b]
        lin = self.linear_probe(r1, training=training)  # [2b, K]
        mlp = self.mlp_probe(r1, training=training)  # [2b, K]
        probe = probe_xent(lin, y) + probe_xent(mlp, y)  # []
        logged = {"loss/total": terms["total"], "loss/probe": probe}
        logged.update({n: terms[n] for n in self.objective.metric_names})
        return {
            "loss": terms["total"] + probe,
            "logged": logged,
            "labels": y,
            "linear_logits": lin,
            "mlp_logits": mlp,
            "feats1": feats1,
        }

    def train_step(self, data):
        views, labels = data
        labels = tf.cast(labels, tf.int32)
        # apply_gradients sums gradients over replicas, while `loss` is this
        # replica's mean: divide once, here, so the update is the global mean.
        per_replica = 1.0 / distribute.num_replicas()
        with tf.GradientTape() as tape:
            out = self.compute_losses(views, labels, training=True)
            loss, logged = out["loss"], out["logged"]
            # scale_loss is the identity except under LossScaleOptimizer (mixed_float16),
            # whose apply_gradients divides the loss scale back out.
            scaled = self.optimizer.scale_loss(loss * per_replica)
        auxiliary = self.auxiliary_variables
        auxiliary_ids = {id(v) for v in auxiliary}
        variables = [v for v in self.trainable_variables if id(v) not in auxiliary_ids]
        grads = tape.gradient(scaled, variables)
        if self.weight_decay:
            # Variables an objective leaves unused (e.g. DIM on AMDIM's encoder never
            # reads the r5 head) have no gradient; decaying them alone would be noise.
            # The decay joins gradients of the scaled loss, so it takes the same factor.
            decay = self.optimizer.scale_loss(self.weight_decay * per_replica)
            grads = [
                g if g is None else g + tf.cast(decay, g.dtype) * tf.cast(v, g.dtype)
                for g, v in zip(grads, variables, strict=True)
            ]
        # Drop unused variables here: merge_call cannot carry None gradients.
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        grads, variables = [g for g, _ in pairs], [v for _, v in pairs]

        _apply_unless_non_finite(self.optimizer, loss, grads, variables)
        if auxiliary:
            # The auxiliary loss reads stop-gradient features, and only its own variables
            # are stepped, so this update cannot move the encoder.
            aux_opt = self.auxiliary_optimizer
            with tf.GradientTape() as aux_tape:
                aux_loss = self.objective.auxiliary_loss(out["feats1"], self.seed_generator)
                aux_scaled = aux_opt.scale_loss(aux_loss * per_replica)  # same reasons as above
            aux_grads = aux_tape.gradient(aux_scaled, auxiliary)
            _apply_unless_non_finite(aux_opt, aux_loss, aux_grads, auxiliary)
            logged[self.objective.auxiliary_metric] = aux_loss
        return self._update_metrics(logged, out["labels"], out["linear_logits"], out["mlp_logits"])

    def test_step(self, data):
        images, labels = data[0], tf.cast(data[1], tf.int32)
        out = self(images, training=False)
        for name, tracker in self._acc_trackers.items():
            logits = out["linear_logits" if "linear" in name else "mlp_logits"]
            tracker.update_state(labels, logits, sample_weight=tf.cast(labels >= 0, tf.float32))
        return distribute.keras_logs({name: t.result() for name, t in self._acc_trackers.items()})

    def _update_metrics(self, logged, y, lin, mlp):
        # No double counting under tf.distribute: the trackers (Keras' only metrics;
        # compile() gets none) take the *unscaled* per-replica losses, each replica
        # reads its own tracker, and Keras averages those results over replicas, so
        # `loss/total` is the global-batch mean, not 1/R of it. (Probe accuracies
        # are a mean of per-replica accuracies: exact when replicas hold equally
        # many labelled images.)
        for name, value in logged.items():
            self._loss_trackers[name].update_state(value)
        valid = tf.cast(y >= 0, tf.float32)
        self._acc_trackers["probe/linear_acc"].update_state(y, lin, sample_weight=valid)
        self._acc_trackers["probe/mlp_acc"].update_state(y, mlp, sample_weight=valid)
        logs = {name: t.result() for name, t in self._loss_trackers.items()}
        logs.update({name: t.result() for name, t in self._acc_trackers.items()})
        return distribute.keras_logs(logs)


def _apply_unless_non_finite(optimizer, loss, grads, variables):
    """optimizer.apply_gradients, skipped (on every replica) when the step went non-finite."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # It skips non-finite gradients itself (and lowers the loss scale).
        optimizer.apply_gradients(zip(grads, variables, strict=True))
    else:
        # A non-finite loss must not poison the weights: skip the update (on every
        # replica), report the loss, and let callbacks.StopOnNonFiniteLoss stop the run.
        distribute.apply_if_finite(
            loss, lambda g: optimizer.apply_gradients(zip(g, variables, strict=True)), (grads,)
        )
