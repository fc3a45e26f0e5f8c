"""Global Deep InfoMax, DIM(G), on CIFAR-10 (Hjelm et al., ICLR 2019; official rdevon/DIM defaults).

alpha=1, beta=0, gamma=1: Y (64-d) scored against a learned summary of the
whole 8x8 local map (strided conv + Dense), JSD estimator, prior matching of
sigmoid(Y) to U[0,1]^64 with a 1000-200-1 discriminator and gradient penalty.
Everything else as dim_local (whose docstring lists the variants
:amdim, :tiny, :amdim_tiny and the optimiser).

Command:
    amdim-train --config=dim_global --workdir=runs/dim_global
Cost: 1000 epochs of 781 steps; measured 0.25 s/step on the shared 2-core CPU
(~3.3 min per epoch, ~2.3 days in full).
Expected: the paper's Table 1 places DIM(G) well below DIM(L) on CIFAR-10
classification; compare the Y column with our r1 probes.
"""

from amdim_tf.presets.dim_local import dim_config


def get_config(arg=None):
    return dim_config(alpha=1.0, beta=0.0, gamma=1.0, arg=arg)
