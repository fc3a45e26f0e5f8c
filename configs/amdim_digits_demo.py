"""The `amdim_digits_demo` preset (amdim_tf/presets/amdim_digits_demo.py, where its command, cost and result are).

Kept so that --config=configs/amdim_digits_demo.py[:VARIANT] works as before; --config=amdim_digits_demo[:VARIANT]
names the same preset from any directory.
"""

from amdim_tf.presets.amdim_digits_demo import get_config

__all__ = ["get_config"]
