"""Seeded samples of a split: the evaluation images a tool looks at, and the held-out split.

- `eval_views`: a seeded sample (uniform or class-balanced) of a labelled split as its
  evaluation views with labels, in memory: what finetune trains and scores on, what
  visualisation draws, what the edge export checks and calibrates with (`eval_pixels`
  gives them back as [0, 1] or uint8 pixels); `first_pixels` the first images of an
  unlabelled part, for the same pictures;
- `chosen_examples`: a seeded uniform choice of the examples of a pretraining split, not yet
  viewed, for the health monitor's fixed pair of augmented views;
- `held_out`: the seeded, class-stratified held-out rows, the one rule behind a folder's
  test split and finetune's validation images.

Every sample is drawn from labels or counts before decoding, so it is cheap, and is the
same for the same seed on every call.
"""

import numpy as np
import tensorflow as tf

# The module, not its names: sources/folder.py imports this file while pipeline.py (which
# imports the sources) may still be loading.
from amdim_tf.data import augment, pipeline
from amdim_tf.data.pixel_scale import to_uint8


def eval_views(data, split: str, n: int = 0, seed: int | None = None, balanced: bool = False,
               batch: int = 256) -> tuple:  # fmt: skip
    """(views float32 [N, S, S, 3] normalised, labels int64 [N]) of `split`, in memory.

    Args:
        data: a `data` config section or the `Source` opened from it.
        n: examples (0 = all; balanced: 0 = as many of each class as the smallest has).
        seed: the sample (None = the split in its order; balanced: None is seed 0).
        balanced: as many examples of each class (`make_eval_dataset(balanced=True)`).

    N is 0 when the split has no labelled example (views [0, S, S, 3]).
    """
    source = pipeline.opened(data)
    ds = pipeline.make_eval_dataset(
        source, split, batch, max_examples=n, sample_seed=seed, balanced=balanced
    )
    views, labels = [], []
    for x, y in ds.as_numpy_iterator():
        views.append(x)
        labels.append(y)
    if not views:
        size = source.data.image_size
        return np.zeros((0, size, size, 3), np.float32), np.zeros(0, np.int64)
    return np.concatenate(views), np.concatenate(labels).astype(np.int64)


def eval_pixels(data, split: str, n: int = 0, seed: int | None = None, balanced: bool = False,
                uint8: bool = False, batch: int = 256) -> tuple:  # fmt: skip
    """`eval_views` before normalising: (pixels [N, S, S, 3] float32 in [0, 1], or uint8
    0..255 with `uint8`, labels int64 [N]), the evaluation view as the encoder sees it."""
    source = pipeline.opened(data)  # opened once: one scan
    preset = augment.preset_for(source.data.augment, source.data.image_size)
    views, labels = eval_views(source, split, n, seed, balanced, batch)
    pixels = augment.denormalise(views, preset)
    return (to_uint8(pixels) if uint8 else pixels).numpy(), labels


def first_pixels(data, part: str, n: int) -> np.ndarray:
    """float32 [min(n, all), S, S, 3] in [0, 1]: the first images of `part` in the
    evaluation view (score maps of unlabelled data, which has no class-balanced sample)."""
    source = pipeline.opened(data)
    preset = augment.preset_for(source.data.augment, source.data.image_size)
    examples = source.examples(part)
    ds = examples.ds.take(n).map(lambda x, y: augment.eval_pixels(examples.decode(x), preset))
    return np.stack(list(ds.as_numpy_iterator()))


def chosen_examples(data, split: str, n: int, seed: int) -> list:
    """A seeded uniform choice of min(n, all) examples of `split` (unlabelled ones included),
    drawn before decoding: per part that holds some, in order, a dataset of (position in
    the part int64, decoded image uint8 [H, W, 3])."""
    source = pipeline.opened(data)
    parts = pipeline.split_parts(split)
    counts = [source.count(p) for p in parts]
    total = sum(counts)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, min(int(n), total), replace=False))
    out, offset = [], 0
    for part, count in zip(parts, counts, strict=True):
        mine = chosen[(chosen >= offset) & (chosen < offset + count)] - offset
        offset += count
        if not len(mine):
            continue
        examples = source.examples(part)
        mask = np.zeros(count, bool)
        mask[mine] = True
        mask = tf.constant(mask)
        ds = examples.ds.enumerate().filter(lambda i, x, m=mask: tf.gather(m, i))
        ds = ds.map(lambda i, x, decode=examples.decode: (i, decode(x[0])))
        out.append(ds)
    return out


def held_out(labels, fraction: float, seed) -> np.ndarray:
    """bool [N]: the seeded, class-stratified held-out rows of `labels` (int [N]):
    round(fraction * n) of each class of n images, at least 1 and at most n - 1 (a class
    of one image stays whole in training). `seed`: an int or a sequence of ints."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = min(max(round(fraction * len(rows)), 1), len(rows) - 1)
        mask[rng.permutation(rows)[:k]] = True
    return mask
