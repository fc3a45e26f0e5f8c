"""Deep InfoMax (Hjelm et al. 2019): the DCGAN-like encoder and the local/global MI objective.

Its feature names: the global Y (`GLOBAL`, "r1") and the local map M ("local").
"""

from amdim_tf.methods.features import GLOBAL

LOCAL = "local"
FEATURES = (GLOBAL, LOCAL)
