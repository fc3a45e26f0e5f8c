"""Pixel scales: uint8 0..255 <-> float [0, 1], the one conversion between the two.

Decoding gives uint8 0..255 (the project's pixel contract for callers); augmentation and
normalisation work on float [0, 1]; thumbnails, sprites and exports go back to uint8.
Back to uint8 always rounds to the nearest level and clips, so a value a hair outside
[0, 1] (bicubic resizing overshoots) never wraps around.
"""

import tensorflow as tf

PIXEL_MAX = 255.0


def to_unit(images) -> tf.Tensor:
    """Pixels 0..255 (uint8, or any integer or float dtype) -> float32 in [0, 1]."""
    return tf.cast(images, tf.float32) / PIXEL_MAX


def to_uint8(images, peak: float = 1.0) -> tf.Tensor:
    """Float pixels in [0, peak] (1.0: the unit scale; 255.0: already 0..255) -> uint8,
    rounded to the nearest level and clipped."""
    images = tf.cast(images, tf.float32)
    if peak != PIXEL_MAX:
        images = tf.clip_by_value(images, 0.0, peak) * (PIXEL_MAX / peak)
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, PIXEL_MAX)), tf.uint8)
