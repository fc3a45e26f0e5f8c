"""AMDIM on STL-10 at 64 px (ndf 128, n_rkhs 1024, depth 3), pretraining on train+unlabeled.

Command:
    amdim-train --config=amdim_stl10 --workdir=runs/stl10
Cost: 57.7 M parameters; ~1 GPU-day per 100 epochs.
Expected: the paper reports 94.2% (linear) on STL-10 with its largest model.
"""

from amdim_tf import config_lib


def get_config(arg=None):
    c = config_lib.base_config()
    c.model.image_size = 64
    c.data.image_size = 64
    c.data.name = "stl10"
    c.data.augment = "stl10"  # the official STL-10 mean/std (augment.py), not ImageNet's
    c.data.shuffle_buffer = 20000
    if arg == "tiny":
        config_lib.make_tiny(c)
    return c
