"""The "digits" source: scikit-learn's 8x8 digits upscaled to 32x32 RGB, offline demo data.

The first 1,440 images are "train", the remaining 357 "test"; they are decoded in memory
once per opened source, so nothing here can be unreadable.
"""

import numpy as np
import tensorflow as tf

from amdim_tf.data.pixel_scale import PIXEL_MAX, to_uint8
from amdim_tf.data.sources.base import Examples, Source
from amdim_tf.errors import UserError

# Digits has no official split; the first 80% (1,440 of 1,797) are a stable "train".
_DIGITS_TRAIN = 1440


def _load_digits():
    from sklearn.datasets import load_digits  # Only the demo source needs sklearn.

    digits = load_digits()
    # 16 gray levels (0..16) -> uint8, then 8x8 -> 32x32 so CIFAR settings apply as is.
    images = (digits.images.astype(np.float32) * (255.0 / 16.0))[..., None]
    images = tf.image.resize(images, [32, 32], method="bilinear")
    images = to_uint8(images, peak=PIXEL_MAX).numpy()
    return np.repeat(images, 3, axis=-1), digits.target.astype(np.int32)


class DigitsSource(Source):
    """scikit-learn's digits at 32x32 RGB: offline demo data, decoded in memory."""

    def __init__(self, data):
        super().__init__(data)
        self._arrays = None

    def _loaded(self):
        if self._arrays is None:
            self._arrays = _load_digits()
        return self._arrays

    def _rows(self, part):
        rows = {"train": slice(0, _DIGITS_TRAIN), "test": slice(_DIGITS_TRAIN, None)}
        if part not in rows:
            raise UserError(
                f"Split {part!r} is not a digits split; use 'train' or 'test' in "
                "data.train_split / data.eval_split."
            )
        return rows[part]

    def examples(self, part: str) -> Examples:
        images, labels = self._loaded()
        rows = self._rows(part)
        ds = tf.data.Dataset.from_tensor_slices((images[rows], labels[rows]))
        return Examples(ds, tf.identity)

    def labels(self, part: str) -> np.ndarray:
        return self._loaded()[1][self._rows(part)]

    def num_classes(self) -> int:
        return 10
