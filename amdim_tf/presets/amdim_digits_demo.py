"""The offline demo: AMDIM on scikit-learn's handwritten digits (1,797 images, 10 classes).

The digits ship inside scikit-learn, so this runs on a machine with no internet.
8x8 grayscale images are upsampled to 32x32 RGB. Command:
    amdim-train --config=amdim_digits_demo --workdir=runs/demo
Cost: a few minutes on a 2-core CPU. Expected: see README.md (the numbers there
were measured with this config).
"""

from amdim_tf import config_lib


def get_config(arg=None):
    c = config_lib.base_config()
    c.data.source = "digits"
    c.data.name = "digits"
    c.data.shuffle_buffer = 2000
    c.model.ndf = 32
    c.model.n_rkhs = 256
    c.model.n_depth = 2
    c.train.batch_size = 64
    c.train.epochs = 30
    c.train.eval_batch_size = 256
    c.train.knn_examples = 200  # digits' test split has 357 images; epochs are 22 steps
    c.optim.lr = 5e-4
    c.optim.warmup_steps = 50
    c.optim.decay_epochs = (25,)
    if arg == "tiny":
        config_lib.make_tiny(c)
    return c
