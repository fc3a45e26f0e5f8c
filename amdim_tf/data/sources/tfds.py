"""The "tfds" source: a prepared TensorFlow Datasets dataset; nothing is downloaded here.

`tfds.builder(data.name, data_dir=data.path or None)`. Prepare the dataset first on a
machine with internet (`tfds build cifar10 --data_dir=...`). `imagenet2012` needs a
manual download, as TFDS documents: put ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in `<data_dir>/downloads/manual/` then run `tfds build
imagenet2012`. `places365_small` downloads itself but is large: build it with `tfds build
places365_small` ahead of time on a machine with internet and copy the data_dir. For
datasets with an `unlabeled` split (stl10) pretraining adds it to `data.train_split`.
TFDS decodes the images itself; they are only bounded in size here.
"""

import numpy as np
import tensorflow as tf

from amdim_tf.data import decode
from amdim_tf.data.sources.base import (
    UNLABELED,
    UNLABELED_SPLIT,
    Examples,
    Source,
    is_unlabeled,
)
from amdim_tf.errors import UserError

# Datasets whose pretraining set, like the paper's STL-10 runs, adds an unlabeled split.
_TFDS_WITH_UNLABELED = ("stl10",)


class TFDSSource(Source):
    """A prepared TensorFlow Datasets dataset; nothing is ever downloaded here."""

    def _builder(self):
        import tensorflow_datasets as tfds  # Heavy; only the tfds source needs it.

        if not self.data.name:
            raise UserError(
                "data.source='tfds' needs a dataset name; set data.name, e.g. 'cifar10'."
            )
        data_dir = self.data.path or None
        if data_dir and not tf.io.gfile.exists(data_dir):
            raise FileNotFoundError(
                f"TFDS data_dir {data_dir!r} does not exist; fix data.path ('' = default)."
            )
        return tfds.builder(self.data.name, data_dir=data_dir)

    def examples(self, part: str) -> Examples:
        builder = self._builder()
        try:
            ds = builder.as_dataset(split=part, as_supervised=True, shuffle_files=False)
        except AssertionError as e:
            # TFDS asserts when the data was never prepared; as_dataset never downloads.
            raise FileNotFoundError(
                f"TFDS dataset {builder.name!r} is not prepared in {builder.data_dir!r}: {e} "
                "Prepare it on a machine with internet (`tfds build NAME --data_dir=DIR`; "
                "imagenet2012 needs its tars in DIR/downloads/manual/) and point data.path "
                "at DIR, or use data.source='npz'/'folder'/'tfrecord'."
            ) from e
        if is_unlabeled(part):
            ds = ds.map(lambda x, y: (x, tf.constant(UNLABELED, tf.int32)))
        else:
            ds = ds.map(lambda x, y: (x, tf.cast(y, tf.int32)))
        return Examples(ds, decode.decoded_image)

    def labels(self, part: str) -> np.ndarray:
        if is_unlabeled(part):
            return np.full(self.count(part), UNLABELED, np.int32)
        # TFDS decodes the images on the way; a one-off cost of a balanced sample.
        ds = self.examples(part).ds.map(lambda x, y: y).batch(4096)
        return np.concatenate([np.zeros([0], np.int32), *ds.as_numpy_iterator()])

    def count(self, part: str) -> int:
        splits = self._builder().info.splits
        if splits:
            return int(splits[part].num_examples)
        # TFDS without split metadata (mocked in tests): count by iterating.
        return int(self.examples(part).ds.reduce(np.int64(0), lambda n, _: n + 1))

    def num_classes(self) -> int:
        return int(self._builder().info.features["label"].num_classes)

    def has_unlabeled(self) -> bool:
        if self.data.name in _TFDS_WITH_UNLABELED:
            return True
        return UNLABELED_SPLIT in self._builder().info.splits
