"""Data: every source into the same two-view pretraining and one-view evaluation batches.

- `decode.py`: encoded bytes -> bounded uint8 RGB, and the decode gate (`data.max_pixels`)
  that refuses an oversized image from its header before any pixel is allocated;
- `sources/`: the `Source` base, one file per source (npz, folder, tfrecord, tfds,
  digits) and the registry (`open_source`); a source scans and validates each split once
  per opened instance, so a run opens its source once and passes it down;
- `pipeline.py`: the tf.data pipelines (`make_pretrain_dataset`, `make_eval_dataset`),
  sampling and counts, over a `data` section or an opened `Source`;
- `augment.py`: the augmentations and normalisation presets (pure, seedable ops), and
  the one preset rule (`augment.preset_for`).
- `samples.py`: seeded samples held in memory (evaluation views or pixels, the health
  monitor's chosen examples) and the one stratified held-out split;
- `pixel_scale.py`: the one uint8 0..255 <-> float [0, 1] conversion.

Import the public names from here.
"""

from amdim_tf.data.decode import IMAGE_EXTENSIONS, MAX_DECODE_SIDE
from amdim_tf.data.pipeline import (
    benchmark_pipeline,
    data_section,
    make_eval_dataset,
    make_pretrain_dataset,
    num_classes,
    num_examples,
    num_pretrain_examples,
    opened,
    pretrain_split,
)
from amdim_tf.data.sources import SOURCES, open_source
from amdim_tf.data.sources.base import UNLABELED, UNLABELED_SPLIT, Data, Source, split_parts
from amdim_tf.data.sources.digits import DigitsSource
from amdim_tf.data.sources.folder import FolderSource
from amdim_tf.data.sources.npz import NpzData, NpzSource, load_npz
from amdim_tf.data.sources.tfds import TFDSSource
from amdim_tf.data.sources.tfrecord import TFRecordSource

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_DECODE_SIDE",
    "SOURCES",
    "UNLABELED",
    "UNLABELED_SPLIT",
    "Data",
    "DigitsSource",
    "FolderSource",
    "NpzData",
    "NpzSource",
    "Source",
    "TFDSSource",
    "TFRecordSource",
    "benchmark_pipeline",
    "data_section",
    "load_npz",
    "make_eval_dataset",
    "make_pretrain_dataset",
    "num_classes",
    "num_examples",
    "num_pretrain_examples",
    "open_source",
    "opened",
    "pretrain_split",
    "split_parts",
]
