"""The `dim_local` preset (amdim_tf/presets/dim_local.py, where its command, cost and result are).

Kept so that --config=configs/dim_local.py[:VARIANT] works as before; --config=dim_local[:VARIANT]
names the same preset from any directory.
"""

from amdim_tf.presets.dim_local import get_config

__all__ = ["get_config"]
