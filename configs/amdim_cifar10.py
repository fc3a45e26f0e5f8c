"""The `amdim_cifar10` preset (amdim_tf/presets/amdim_cifar10.py, where its command, cost and result are).

Kept so that --config=configs/amdim_cifar10.py[:VARIANT] works as before; --config=amdim_cifar10[:VARIANT]
names the same preset from any directory.
"""

from amdim_tf.presets.amdim_cifar10 import get_config

__all__ = ["get_config"]
