"""Local Deep InfoMax, DIM(L), on CIFAR-10 (Hjelm et al., ICLR 2019; official rdevon/DIM defaults).

alpha=0, beta=1, gamma=0.1: Y (64-d) against every location of the 8x8x128
local map of DIM's own DCGAN-like encoder, JSD estimator, 2048-unit
encode-and-dot-product critics, prior matching of sigmoid(Y) to U[0,1]^64.
Adam lr 1e-4 at batch 64 (official plugin defaults; betas are PyTorch's
defaults, an assumption), no warm-up, decay or weight decay. One view: the
second augmented view is encoded only to train the online probes.

Variants (append to the preset name):
  (none)        DIM(L) with DIM's encoder, JSD.  --config.dim.estimator=nce|dv for the others.
  :amdim        DIM(L) on AMDIM's encoder (Y = r1, local map = r7) for a like-for-like
                comparison with amdim_cifar10.
  :tiny, :amdim_tiny   seconds-long smoke runs.
Command (offline: --config.data.source=npz --config.data.path=../shared/data/cifar10/cifar10-jpeg.npz):
    amdim-train --config=dim_local --workdir=runs/dim_local
Cost: 1000 epochs of 781 steps (the official default length). Measured on the shared
2-core CPU: 1.0 s/step (14.5M parameters, mostly the 2048-unit critics), i.e. ~13 min
per epoch and ~9 days for the full run; shorten with --config.train.epochs.
Expected: the paper's Table 1 gives CIFAR-10 accuracies of classifiers on the
conv, fc and Y layers, DIM(L) far above DIM(G); our probes read Y (r1), so
compare with its Y column (the evaluate tool can also read "conv"/"fc").
"""

import ml_collections

from amdim_tf import config_lib
from amdim_tf.errors import UserError


def dim_config(alpha, beta, gamma, arg=None):
    """A DIM preset with the given weights; `arg` in {None, 'tiny', 'amdim', 'amdim_tiny'}."""
    c = config_lib.base_config()
    c.method = "dim"
    c.model.ndf = 64  # DIM encoder: conv widths 64-128-256
    c.model.n_rkhs = 64  # width of Y, the global feature (r1)

    c.dim = ml_collections.ConfigDict()
    c.dim.encoder = "dim"  # 'dim' (DIM's own encoder) | 'amdim' (AMDIMEncoder)
    c.dim.fc_units = 1024  # DIM encoder's hidden FC layer
    c.dim.local_layer = -1  # DIM encoder conv stage used as local map; -1 = the 8x8 one
    c.dim.local_feature = ""  # AMDIM encoder's local map: 'r7' (default), 'h7', 'r5', 'h5'
    c.dim.estimator = "jsd"  # jsd | nce | dv
    c.dim.alpha = alpha  # global MI weight
    c.dim.beta = beta  # local MI weight
    c.dim.gamma = gamma  # prior matching weight (0 = no discriminator)
    c.dim.critic_units = 2048  # width of the encode-and-dot-product critic
    c.dim.summary_width = 256  # global critic: strided conv channels over the local map
    c.dim.disc_hidden = (1000, 200)  # prior discriminator MLP
    c.dim.gp_coeff = 1.0  # discriminator gradient penalty
    c.dim.cross_view = False  # True: Y of view 1 vs the local map of view 2

    c.optim.lr = 1e-4
    c.optim.beta_1 = 0.9
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 0
    c.optim.decay_epochs = ()
    c.train.batch_size = 64
    c.train.epochs = 1000

    if arg in ("amdim", "amdim_tiny"):
        # AMDIM's encoder and width: Y = r1 (n_rkhs), local map = r7.
        c.dim.encoder = "amdim"
        c.dim.local_feature = "r7"
        c.model.ndf = 128
        c.model.n_rkhs = 1024
    if arg in ("tiny", "amdim_tiny"):
        config_lib.make_tiny(c)
        c.dim.fc_units = 32
        c.dim.critic_units = 32
        c.dim.summary_width = 16
        c.dim.disc_hidden = (32, 16)
    elif arg not in (None, "", "amdim"):
        raise UserError(f"Unknown variant {arg!r}; use '', 'tiny', 'amdim' or 'amdim_tiny'.")
    return c


def get_config(arg=None):
    return dim_config(alpha=0.0, beta=1.0, gamma=0.1, arg=arg)
