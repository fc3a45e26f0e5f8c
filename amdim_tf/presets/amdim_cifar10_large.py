"""AMDIM's large CIFAR-10 model from the paper (ndf 256, n_rkhs 2048, depth 10, batch 480).

Command:
    amdim-train --config=amdim_cifar10_large --workdir=runs/c10_large
Cost: 127.8 M parameters; several GPUs for days (the paper used 4-8 V100s).
Expected: the paper reports 91.2% (linear) on CIFAR-10.
"""

from amdim_tf import config_lib


def get_config(arg=None):
    c = config_lib.base_config()
    c.model.ndf = 256
    c.model.n_rkhs = 2048
    c.model.n_depth = 10
    c.train.batch_size = 480
    if arg == "tiny":
        config_lib.make_tiny(c)
    return c
