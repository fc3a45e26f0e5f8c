"""AMDIM on ImageNet at 128 px (ndf 192, n_rkhs 1536, depth 8, batch 480), the paper's main model.

TFDS needs the ILSVRC2012 tars downloaded by hand into its manual_dir (see the
TFDS imagenet2012 page). Command:
    amdim-train --config=amdim_imagenet --workdir=runs/in128
Cost: 208.4 M parameters; 4 V100s with mixed precision for about a week (official README).
Expected: ~62-63% online linear accuracy with the official augmentation (68.1% in the paper
with Fast AutoAugment and a longer schedule).
"""

from amdim_tf import config_lib


def get_config(arg=None):
    c = config_lib.base_config()
    c.model.image_size = 128
    c.model.ndf = 192
    c.model.n_rkhs = 1536
    c.model.n_depth = 8
    c.data.image_size = 128
    c.data.name = "imagenet2012"
    c.data.eval_split = "validation"
    c.data.num_classes = 1000
    c.train.batch_size = 480
    c.train.epochs = 50
    c.optim.decay_epochs = (30, 45)
    if arg == "tiny":
        config_lib.make_tiny(c)
    return c
