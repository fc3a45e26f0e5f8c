"""The `cpc` preset (amdim_tf/presets/cpc.py, where its command, cost and result are).

Kept so that --config=configs/cpc.py[:VARIANT] works as before; --config=cpc[:VARIANT]
names the same preset from any directory.
"""

from amdim_tf.presets.cpc import get_config

__all__ = ["get_config"]
