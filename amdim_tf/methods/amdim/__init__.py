"""AMDIM (Bachman, Hjelm & Buchwalter 2019): the encoder and the multiscale InfoNCE objective.

Its feature names (§3.5): r1 the global 1x1 feature, r5 and r7 the 5x5 and 7x7
local maps after the critic heads, used by the objective and offered to export
and embedding.
"""

from amdim_tf.methods.features import GLOBAL

R1 = GLOBAL
R5 = "r5"
R7 = "r7"
FEATURES = (R1, R5, R7)
