"""Contrastive Predictive Coding on CIFAR-10 images (van den Oord et al. 2018; CPC v2, Hénaff et al. 2019).

Each 32 px image becomes a 7x7 grid of 8x8 patches at stride 4; a small
LayerNorm conv net embeds each patch (256-d), a causal (PixelCNN-style)
context network reads the grid top to bottom, and one linear map per row
offset k = 2..5 predicts the embedding k rows below; InfoNCE with every other
patch of the batch as negatives. Offset 1 is skipped (its patch overlaps).
The probes read r1 = mean of the patch embeddings. Same optimiser, data and
probes as amdim_cifar10, except batch 64 (the score matrices grow
with the square of the patch count: batch 64 -> 2,240 x 3,136 per offset).

Variants: (none) | :tiny (seconds, for tests).
Command (offline: --config.data.source=npz --config.data.path=../shared/data/cifar10/cifar10-jpeg.npz):
    amdim-train --config=cpc --workdir=runs/cpc
Cost: 300 epochs of 781 steps; measured 0.63 s/step on the shared 2-core CPU
(1.9M parameters; ~8 min per epoch, ~41 h in full).
Expected: no published CIFAR-10 number exists for this small CPC; it is the
comparison baseline and should land below AMDIM on the linear probe.
"""

import ml_collections

from amdim_tf import config_lib
from amdim_tf.errors import UserError


def get_config(arg=None):
    c = config_lib.base_config()
    c.method = "cpc"
    c.model.ndf = 32  # patch encoder: conv widths 32 then 64
    c.model.n_rkhs = 256  # width of z, c and r1

    c.cpc = ml_collections.ConfigDict()
    c.cpc.patch_size = 0  # 0 = image_size / 4 (8 px at 32 px, 16 at 64)
    c.cpc.patch_stride = 0  # 0 = image_size / 8 (half overlap -> a 7x7 grid)
    c.cpc.context_blocks = 2  # residual causal conv blocks of the context network
    c.cpc.min_offset = 2  # first predicted row offset (1 overlaps)
    c.cpc.max_offset = 5  # last predicted row offset (< grid side)

    c.train.batch_size = 64
    if arg == "tiny":
        config_lib.make_tiny(c)
        c.cpc.context_blocks = 1
        c.cpc.max_offset = 3
    elif arg not in (None, ""):
        raise UserError(f"Unknown variant {arg!r}; use '' or 'tiny'.")
    return c
