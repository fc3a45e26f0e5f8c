"""The `dim_global` preset (amdim_tf/presets/dim_global.py, where its command, cost and result are).

Kept so that --config=configs/dim_global.py[:VARIANT] works as before; --config=dim_global[:VARIANT]
names the same preset from any directory.
"""

from amdim_tf.presets.dim_global import get_config

__all__ = ["get_config"]
