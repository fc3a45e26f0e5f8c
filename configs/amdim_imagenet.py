"""The `amdim_imagenet` preset (amdim_tf/presets/amdim_imagenet.py, where its command, cost and result are).

Kept so that --config=configs/amdim_imagenet.py[:VARIANT] works as before; --config=amdim_imagenet[:VARIANT]
names the same preset from any directory.
"""

from amdim_tf.presets.amdim_imagenet import get_config

__all__ = ["get_config"]
