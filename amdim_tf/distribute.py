"""The one place that touches the tf.distribute replica context.

AMDIM's negatives must span the *global* batch (the official code computed the
NCE over the whole batch through nn.DataParallel); a per-replica NCE silently
weakens the objective as replicas are added. SimCLR's TF2 code does the same
cross-replica concatenation.
"""

import tensorflow as tf


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
