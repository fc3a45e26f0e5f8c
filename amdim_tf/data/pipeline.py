"""Pipeline assembly: an opened source into AMDIM's two-view and evaluation batches.

AMDIM (Bachman et al. 2019, Sec. 3.1) pretrains on two augmented views of each image and
evaluates frozen features on labelled splits. The official code (amdim-public,
`datasets.py: build_dataset`) pretrains STL-10 on `train+unlabeled` and evaluates on
`train`/`test`; we follow that here for every source:

- `make_pretrain_dataset` yields `((view1, view2), label)` forever, label -1 for unlabeled
  examples (STL-10's `unlabeled` split, an unlabeled image folder);
- `make_eval_dataset` yields `(image, label)` once over the labelled examples of a split,
  optionally a seeded uniform or class-balanced sample of them.

This file owns the order, sharding, caching, sampling and seeding of the examples and
the counts a run needs; reading, validating and decoding belong to `sources/` and
`decode.py`, the augmentations to `augment.py`, and every default of the `data` config
section to `config_lib.base_config()`.

Every function takes either the `data` config section or a `Source` already opened from
it (`open_source(data)`): a run opens its source once and passes it down, so each split
is scanned and validated once (with its warnings logged once).

Splits may be joined with "+" ("train+unlabeled"); a part named "unlabeled" gets label -1.
Every example's augmentation seed is derived from (seed, example index, epoch), so a fixed
seed reproduces each batch exactly, with or without caching and parallelism.
"""

import time

import numpy as np
import tensorflow as tf
from absl import logging

from amdim_tf.data import augment
from amdim_tf.data.sources import open_source
from amdim_tf.data.sources.base import AUTOTUNE, Data, Examples, Source, split_parts
from amdim_tf.errors import UserError


def opened(data: Data | Source) -> Source:
    """`data` itself if it is an opened `Source`, else the source its section names."""
    return data if isinstance(data, Source) else open_source(data)


def data_section(data: Data | Source) -> Data:
    """The `data` config section of `data` (itself, or the section a source was opened with)."""
    return data.data if isinstance(data, Source) else data


def _preset(data):
    preset = augment.preset_for(data.augment, data.image_size)
    augment.preset_size(preset)  # an unknown name: the error listing the presets
    return preset


def _examples(source, split):
    parts = [source.examples(p) for p in split_parts(split)]
    ds = parts[0].ds
    for extra in parts[1:]:
        ds = ds.concatenate(extra.ds)
    return Examples(ds, parts[0].decode)


def pretrain_split(data: Data | Source) -> str:
    """The split expression pretraining reads: data.train_split plus unlabeled data."""
    source = opened(data)
    return "+".join(source.pretrain_parts(split_parts(source.data.train_split)))


def _indexed(examples, input_context):
    """(index, payload, label), sharded; the index is global so seeds differ per shard."""
    ds = examples.ds.enumerate().map(lambda i, e: (i, e[0], e[1]))
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds


def _maybe_cache(ds, decode, data):
    """Decodes before caching when data.cache, so the cache holds uint8 images."""
    if not data.cache:
        return ds, decode
    ds = ds.map(lambda i, x, y: (i, decode(x), y), num_parallel_calls=AUTOTUNE).cache()
    return ds, tf.identity


def _options():
    options = tf.data.Options()
    # Reproducible batches need ordered parallel maps; say so explicitly.
    options.deterministic = True
    return options


def make_pretrain_dataset(
    data: Data | Source,
    batch_size: int,
    seed: int,
    input_context: tf.distribute.InputContext | None = None,
    start_step: int = 0,
) -> tf.data.Dataset:
    """Endless shuffled two-view batches for AMDIM pretraining.

    Args:
      data: the `data` config section, or the `Source` opened from it.
      batch_size: per-replica batch size (each input pipeline yields such batches).
      seed: int; fixes shuffling and every augmentation.
      input_context: optional `tf.distribute.InputContext`; examples are sharded by
        `input_pipeline_id` / `num_input_pipelines`.
      start_step: batches already consumed (resume): the stream continues exactly
        where a run that took that many steps stopped.

    Returns:
      A dataset of `((view1, view2), label)`: float32 [B, S, S, 3] views and int32 [B]
      labels, -1 for unlabeled examples.
    """
    source = opened(data)
    data = source.data
    preset = _preset(data)
    examples = _examples(source, pretrain_split(source))
    ds, decode = _maybe_cache(_indexed(examples, input_context), examples.decode, data)
    buffer = int(data.shuffle_buffer)
    key = tf.constant([0, seed], tf.int64)
    if buffer > 1:
        # A Python seed with reshuffle_each_iteration gives a fixed sequence of epoch
        # orders, so the stream is a pure function of (seed, position). (A tensor seed
        # per epoch breaks inside tf.data when TF's global seed is 0.)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    # `position` numbers every draw of the endless stream: an image seen in several
    # epochs gets a different augmentation each time, and resuming at a position
    # reproduces the uninterrupted stream exactly.
    ds = ds.repeat().enumerate()

    def two_views(position, example):
        index, payload, label = example
        example_key = tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(key, position), index
        )
        views = augment.two_views(decode(payload), example_key, preset)
        return views, label

    if start_step:
        # Skip before augmenting: resuming costs a shuffle pass, not the augmentation.
        ds = ds.skip(int(start_step) * int(batch_size))
    ds = ds.map(two_views, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(_options())


def _balanced_sample(labels, size, seed):
    """Indices of a seeded sample with (as near as possible) equal counts per class.

    size 0 takes the smallest class's count from every class. Classes are drawn in a
    seeded order for the remainder of size / classes; the result is in a seeded order so
    that every batch of it mixes classes.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[labels >= 0])
    if not classes.size:
        raise UserError("A balanced sample needs labelled examples; the split has none.")
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    if not size:
        size = min(len(m) for m in members) * len(classes)
    per_class, extra = divmod(int(size), len(classes))
    takes = np.full(len(classes), per_class)
    takes[rng.permutation(len(classes))[:extra]] += 1
    short = [int(c) for c, m, t in zip(classes, members, takes, strict=True) if len(m) < t]
    if short:
        logging.warning(
            "Balanced sample of %d: classes %s have fewer examples; taking all of theirs.",
            size,
            short,
        )
    chosen = np.concatenate([m[:t] for m, t in zip(members, takes, strict=True)])
    return rng.permutation(chosen)


def make_eval_dataset(
    data: Data | Source,
    split: str,
    batch_size: int,
    input_context: tf.distribute.InputContext | None = None,
    max_examples: int = 0,
    sample_seed: int | None = None,
    balanced: bool = False,
) -> tf.data.Dataset:
    """One pass over the labelled examples of `split`: `(image, label)` batches.

    Images are `augment.eval_view`s, float32 [B, S, S, 3]; labels int32 [B]; the last
    batch may be smaller; examples with label -1 are dropped.

    max_examples / sample_seed: a seeded uniform sample of that many examples
    (drawn before decoding, so it is cheap). Files are often sorted by class (the
    CIFAR-10 JPEG copy is), so "the first N" would be a few classes only.
    balanced: instead, a seeded sample with max_examples / num_classes examples of each
    class (0 = as many of each as the smallest class has), in a seeded order; the
    labels are read without decoding (tfds decodes once to read them).
    """
    source = opened(data)
    data = source.data
    preset = _preset(data)
    examples = _examples(source, split)
    ds = _indexed(examples, input_context).filter(lambda i, x, y: y >= 0)
    if balanced:
        labels = np.concatenate([source.labels(p) for p in split_parts(split)])
        seed = 0 if sample_seed is None else sample_seed
        chosen = _balanced_sample(labels, max_examples, seed)
        mask = np.zeros(len(labels), bool)
        mask[chosen] = True
        mask = tf.constant(mask)
        ds = ds.filter(lambda i, x, y: tf.gather(mask, i))
        ds = ds.shuffle(len(chosen), seed=seed)
    else:
        if sample_seed is not None:
            ds = ds.shuffle(num_examples(source, split), seed=sample_seed)
        if max_examples:
            ds = ds.take(max_examples)
    ds, decode = _maybe_cache(ds, examples.decode, data)
    ds = ds.map(
        lambda i, x, y: (augment.eval_view(decode(x), preset), y),
        num_parallel_calls=AUTOTUNE,
    )
    ds = ds.batch(batch_size, drop_remainder=False)
    return ds.prefetch(AUTOTUNE).with_options(_options())


def num_examples(data: Data | Source, split: str) -> int:
    """Number of examples in `split` ("a+b" adds up), unlabeled ones included."""
    source = opened(data)
    return sum(source.count(p) for p in split_parts(split))


def num_pretrain_examples(data: Data | Source) -> int:
    """Number of examples one pretraining epoch visits (before sharding)."""
    source = opened(data)
    return num_examples(source, pretrain_split(source))


def num_classes(data: Data | Source) -> int:
    """Number of classes of the labelled data."""
    return opened(data).num_classes()


def benchmark_pipeline(
    data: Data | Source, batch_size: int, seconds: float, seed: int = 0
) -> float:
    """Images per second that `make_pretrain_dataset` alone delivers on this machine."""
    it = iter(make_pretrain_dataset(data, batch_size, seed))
    for _ in range(3):  # Warm-up: tracing, thread pools and AUTOTUNE ramp-up.
        next(it)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(it)
        count += batch_size
    return count / (time.perf_counter() - start)
