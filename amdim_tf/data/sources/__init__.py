"""The data sources (one file each) and their registry: `data.source` -> `Source` class.

- "npz": the project's encoded-array file (`npz.py`);
- "digits": scikit-learn's digits at 32x32, offline demo data (`digits.py`);
- "folder": image files in class sub-directories, plus a flat unlabeled folder
  (`folder.py`, the one reader of image files);
- "tfrecord": `tf.train.Example` files (`tfrecord.py`);
- "tfds": a prepared TensorFlow Datasets dataset (`tfds.py`).

`open_source(data)` opens the source a `data` config section names; a run opens it once
and passes it down (see `base.Source`).
"""

from amdim_tf.data.sources.base import Data, Source
from amdim_tf.data.sources.digits import DigitsSource
from amdim_tf.data.sources.folder import FolderSource
from amdim_tf.data.sources.npz import NpzSource
from amdim_tf.data.sources.tfds import TFDSSource
from amdim_tf.data.sources.tfrecord import TFRecordSource
from amdim_tf.errors import UserError

SOURCES = {
    "npz": NpzSource,
    "tfds": TFDSSource,
    "folder": FolderSource,
    "tfrecord": TFRecordSource,
    "digits": DigitsSource,
}


def open_source(data: Data) -> Source:
    """The `Source` object of `data.source` (its examples, labels and counts per split part)."""
    name = data.source
    if name not in SOURCES:
        raise UserError(f"Unknown data.source {name!r}; expected one of {tuple(SOURCES)}.")
    return SOURCES[name](data)
