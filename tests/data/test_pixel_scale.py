"""The one pixel-scale conversion: uint8 0..255 <-> float [0, 1], rounded and clipped."""

import numpy as np
import pytest
import tensorflow as tf

from amdim_tf.data import pixel_scale


@pytest.mark.parametrize("peak", [1.0, 255.0])
def test_pixel_scale_rounds_and_clips(peak):
    x = np.array([-0.2, 0.0, 0.5, 100.4 / 255, 1.0, 1.3], np.float32) * peak
    got = pixel_scale.to_uint8(x, peak).numpy()
    assert got.tolist() == [0, 0, 128, 100, 255, 255]
    unit = pixel_scale.to_unit(tf.constant([0, 51, 255], tf.uint8)).numpy()
    np.testing.assert_allclose(unit, [0.0, 0.2, 1.0])
