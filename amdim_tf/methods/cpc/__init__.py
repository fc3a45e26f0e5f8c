"""CPC (van den Oord et al. 2018): the patch encoder with its context network and the InfoNCE over offsets.

Its feature names: the global mean of patch embeddings (`GLOBAL`, "r1"), the patch
embeddings z and their causal contexts c, each on the patch grid.
"""

from amdim_tf.methods.features import GLOBAL

Z = "z"
C = "c"
FEATURES = (GLOBAL, Z, C)
