"""The `amdim_cifar10_cpu` preset (amdim_tf/presets/amdim_cifar10_cpu.py, where its command, cost and result are).

Kept so that --config=configs/amdim_cifar10_cpu.py[:VARIANT] works as before; --config=amdim_cifar10_cpu[:VARIANT]
names the same preset from any directory.
"""

from amdim_tf.presets.amdim_cifar10_cpu import get_config

__all__ = ["get_config"]
