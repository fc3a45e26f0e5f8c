"""Data: every source into the same two-view pretraining and one-view evaluation batches.

`pipeline.py` reads, validates and decodes every source and assembles the tf.data
pipelines; `augment.py` holds the augmentations and normalisation presets (pure,
seedable ops). Import the public names from here.
"""

from amdim_tf.data.pipeline import (
    IMAGE_EXTENSIONS,
    MAX_DECODE_SIDE,
    SOURCES,
    UNLABELED,
    UNLABELED_SPLIT,
    Data,
    DigitsSource,
    FolderSource,
    NpzData,
    NpzSource,
    Source,
    TFDSSource,
    TFRecordSource,
    benchmark_pipeline,
    load_npz,
    make_eval_dataset,
    make_pretrain_dataset,
    num_classes,
    num_examples,
    num_pretrain_examples,
    open_source,
    pretrain_split,
    split_parts,
)

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
    "load_npz",
    "make_eval_dataset",
    "make_pretrain_dataset",
    "num_classes",
    "num_examples",
    "num_pretrain_examples",
    "open_source",
    "pretrain_split",
    "split_parts",
]
