"""The `amdim_folder` preset (amdim_tf/presets/amdim_folder.py, where its command, cost and result are).

Kept so that --config=configs/amdim_folder.py[:VARIANT] works as before; --config=amdim_folder[:VARIANT]
names the same preset from any directory.
"""

from amdim_tf.presets.amdim_folder import get_config

__all__ = ["get_config"]
