"""The one place that touches tf.distribute internals: strategies, replica context, chief.

AMDIM's negatives must span the *global* batch (the official code computed the
NCE over the whole batch through nn.DataParallel); a per-replica NCE silently
weakens the objective as replicas are added. SimCLR's TF2 code does the same
cross-replica concatenation. The rest of the code sees a strategy object
(`scope()`, `distribute_datasets_from_function`) and the helpers below.
"""

import os
import tempfile

import tensorflow as tf

from amdim_tf import compat
from amdim_tf.errors import UserError

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name):
    """The tf.distribute strategy named by `config.distribute`.

    "default": no distribution (one device, TF's default strategy).
    "mirrored": one replica per local GPU (or the CPU alone), all-reduce in place.
    "multiworker": MultiWorkerMirroredStrategy; the cluster and this task's role
        come from the TF_CONFIG environment variable. It must be created before
        TF runs any op, so call this first.
    A TPUStrategy would plug in here (TPUClusterResolver, initialize_tpu_system,
    TPUStrategy); the rest of the code only uses the generic strategy API, and
    `reduce_per_replica` in Keras already picks "first" for TPUs.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError(
                "config.distribute='multiworker' needs the TF_CONFIG environment "
                "variable (cluster spec and this task's type/index); see BUILD.md."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"Unknown config.distribute={name!r}; available: {STRATEGIES}.")


def is_chief(strategy):
    """True on the task that writes the work directory (always, without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    # Without a "chief" job, worker 0 is the chief (as Keras and the TF guide assume).
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def is_multi_worker(strategy):
    """True when replicas span several hosts."""
    return compat.in_multi_worker_mode(strategy)


def worker_temp_dir(task_id):
    """Where a non-chief worker writes the checkpoints it must write but nobody reads.

    Saving may run collectives, so every worker saves; only the chief's copy is kept
    (the TF multi-worker guide's `write_filepath`)."""
    return tempfile.mkdtemp(prefix=f"amdim_worker{task_id}_")


class StopAgreement:
    """Makes every worker stop at the same step when any one of them must.

    A worker that stops alone (its SIGTERM, its clock's time budget) would leave
    the others waiting forever in the next step's all-reduce, and its checkpoint
    would not match theirs. So at every check each worker contributes a reason
    code (0 = go on, 1..n_codes; the largest code any worker gave wins) and all
    get the same answer: one small collective per step, run by every worker at
    the same step since they all call it from the same batch-end callback.
    Without several workers it costs nothing.
    """

    def __init__(self, strategy, n_codes=2):
        self._agree = None
        self.n_codes = n_codes
        if is_multi_worker(strategy):

            @tf.function
            def agree(votes):
                # Reductions have SUM and MEAN only: sum one-hot votes over all replicas.
                per_replica = strategy.run(tf.identity, args=(votes,))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

            self._agree = agree

    def __call__(self, code):
        """The largest `code` (0..n_codes) over all workers."""
        if self._agree is None:
            return int(code)
        votes = tf.one_hot(int(code) - 1, self.n_codes)  # [n_codes]; code 0 -> zeros
        counts = self._agree(votes).numpy()  # [n_codes] votes per code
        return max([i + 1 for i in range(self.n_codes) if counts[i] > 0], default=0)


def num_replicas():
    """Replicas in sync in the current (cross-)replica context (1 without a strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def gather_global(x):
    """Concatenate `x` [b, ...] over replicas along axis 0.

    Returns (x_global [b * R, ...], offset): offset is the index of this
    replica's first row in x_global. ReplicaContext.all_gather is
    differentiable: the gradient of each replica's slice is the sum of the
    gradients every replica's loss sends to it, so targets learn from all
    replicas' sources.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x, 0
    x_global = ctx.all_gather(x, axis=0)
    offset = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * tf.shape(x)[0]
    return x_global, offset


def apply_if_finite(value, apply_fn, args):
    """Calls `apply_fn(*args)` (e.g. optimizer.apply_gradients) in this replica unless
    `value` is non-finite on *any* replica; returns nothing.

    Two distributed subtleties: every replica must take the same branch (the update
    all-reduces, so a replica skipping it alone would hang the others), and under
    MirroredStrategy a `tf.cond` whose branch all-reduces must run in the cross-replica
    context (merge_call cannot be called from inside a cond in a replica). Keras'
    LossScaleOptimizer does the same. `args` go through merge_call so that each
    replica applies its own values (a closure would see one replica's tensors).
    """

    def run(*a):
        apply_fn(*a)
        return tf.constant(True)

    skip = lambda: tf.constant(False)
    finite = tf.reduce_all(tf.math.is_finite(value))
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise ValueError("apply_if_finite must be called in a replica context (inside train_step).")
    if not tf.distribute.has_strategy():
        tf.cond(finite, lambda: run(*args), skip)
        return
    n_bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
    finite = tf.equal(n_bad, 0.0)
    if compat.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: run(*args), skip)
        return

    def merged(strategy, finite, args):
        # Every replica holds the same all-reduced flag: take the first.
        flag = strategy.experimental_local_results(finite)[0]

        def apply_all():
            strategy.extended.call_for_each_replica(run, args=args)
            return tf.constant(True)

        tf.cond(flag, apply_all, skip)

    ctx.merge_call(merged, args=(finite, args))


def keras_logs(logs):
    """Train/test-step logs in the shape Keras's per-replica reduction expects.

    Under multi-worker MultiWorkerMirroredStrategy, Keras 3 (TF backend) reduces each
    log with strategy.reduce("MEAN", v, axis=0), which fails on scalars ("Invalid
    reduction dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388).
    There each log gets a leading axis of 1, which that reduction removes again
    (the mean over all replicas); elsewhere logs are returned unchanged.
    """
    strategy = tf.distribute.get_strategy()
    # Keras's own condition (its _collective_all_reduce_multi_worker).
    if not (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and is_multi_worker(strategy)
    ):
        return logs
    return {k: tf.reshape(v, [1]) for k, v in logs.items()}
