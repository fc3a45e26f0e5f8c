"""The feature-dict contract every encoder keeps: the one global key the model and probes read.

Encoders map images [B, S, S, 3] to a dict of named features (models return dicts,
never tuples). Whatever else a method returns (AMDIM's r5/r7, DIM's local map, CPC's
z/c, each listed as that method's `FEATURES`), every encoder returns `GLOBAL`
[B, 1, 1, D]: the representation the online probes, the evaluation and the export
read.
"""

import tensorflow as tf

GLOBAL = "r1"


def flat_global(feats: dict) -> tf.Tensor:
    """The global feature of an encoder's output dict, flattened: [B, 1, 1, D] -> [B, D]."""
    g = feats[GLOBAL]  # [B, 1, 1, D]
    return tf.reshape(g, [tf.shape(g)[0], -1])  # [B, D]
