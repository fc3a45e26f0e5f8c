"""AMDIM on CIFAR-10, the official code's CIFAR defaults (ndf 128, n_rkhs 1024, depth 3).

Command (needs internet for TFDS, or set --config.data.source=npz
--config.data.path=../shared/data/cifar10/cifar10-jpeg.npz offline):
    amdim-train --config=amdim_cifar10 --workdir=runs/c10
Cost: 300 epochs of 250 steps at batch 200; days on a 2-core CPU, ~1 day on a V100.
Expected: the paper reports ~91% linear accuracy on CIFAR-10 with the large model
(amdim_cifar10_large); this default size gets a few points less.
Append ":tiny" to the preset name for a seconds-long smoke run.
"""

from amdim_tf import config_lib


def get_config(arg=None):
    c = config_lib.base_config()
    if arg == "tiny":
        config_lib.make_tiny(c)
    return c
