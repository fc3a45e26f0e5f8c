"""AMDIM on your own folder of small images, sized for a 2-core CPU, then few labels.

The user path "pretrain on my unlabelled images, then fine-tune with a few labels":

    amdim-train --config=amdim_folder --config.data.path=PHOTOS --workdir=runs/mine
    amdim-finetune --encoder=runs/mine --per_class=10,50 --seeds=1,2 \
        --config.data.path=LABELLED --config.data.labels=folders

PHOTOS is a folder of images as you keep them: every image under it, loose or in
sub-folders, is read as unlabelled (data.labels="none"); one line says so when it has
sub-folders. The online probes and the kNN monitor need labels and are off; the
label-free health monitors run. `--config.data.unlabeled_path=MORE` adds another folder
of unlabelled images (either path alone is enough). To pretrain on a labelled set with
the probes on, give a folder with one directory per class and
`--config.data.labels=folders` (images beside the class directories are then skipped and
named). A labelled folder without train/ and test/ directories is split for you (20% of
each class held out for scoring, seed 0). Any size of image is read; each is seen at
32 px. Variants:
  (none)     the 15-minute recipe of `amdim_cifar10_cpu:quarter` (the parity model,
             batch 128, cosine decay over 1,200 planned steps, a 780 s training budget):
             README "Few labels" gives what it reached on CIFAR-10 and on the digits.
  :hour      the one-hour recipe of `amdim_cifar10_cpu`.
  :tiny      seconds, for smoke tests.
Images larger than 32 px: set --config.data.image_size=64 (or 128) for a larger
encoder input; the step time grows with the pixels.
"""

from amdim_tf import config_lib
from amdim_tf.errors import UserError
from amdim_tf.presets import amdim_cifar10_cpu


def get_config(arg=None):
    if arg not in (None, "", "hour", "tiny"):
        raise UserError(f"unknown variant {arg!r} of amdim_folder; use hour, tiny or nothing")
    if arg == "tiny":
        c = config_lib.base_config()
        config_lib.make_tiny(c)
    else:
        c = amdim_cifar10_cpu.get_config("hour" if arg == "hour" else "quarter")
    c.data.source = "folder"
    c.data.name = "folder"
    c.data.path = ""  # required: --config.data.path=DIR (or data.unlabeled_path)
    c.data.labels = "none"  # every image is unlabelled; "folders": sub-directories are classes
    c.data.shuffle_buffer = 10000
    return c
