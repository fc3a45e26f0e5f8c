"""Which labels the few-label protocol sees: label budgets, the class-balanced seeded
subset of the train split for each, the eval split it is scored on, and the held-out part
of each subset that selects among candidates and arms (never the test split)."""

import dataclasses

import numpy as np

from amdim_tf import data as data_lib
from amdim_tf.data import samples
from amdim_tf.errors import UserError, first_line


@dataclasses.dataclass(frozen=True)
class Budget:
    """A label budget: a fraction of the train split, or a number of images per class."""

    fraction: float = 0.0
    per_class: int = 0

    def __post_init__(self):
        if bool(self.fraction) == bool(self.per_class):
            raise UserError(
                f"A label budget is a fraction or a per-class count, received "
                f"fraction={self.fraction!r}, per_class={self.per_class!r}."
            )
        if not 0.0 <= self.fraction <= 1.0 or self.per_class < 0:
            raise UserError(
                f"Label fractions lie in (0, 1] and per-class counts are positive; received "
                f"fraction={self.fraction!r}, per_class={self.per_class!r}."
            )

    @property
    def name(self) -> str:
        return f"{100 * self.fraction:g}%" if self.fraction else f"{self.per_class}/class"

    def resolve(self, num_train: int, names) -> int:
        """Images per class for a train split of `num_train` images and classes `names`."""
        if self.per_class:
            return self.per_class
        images = round(self.fraction * num_train)
        per_class = images // len(names)
        if per_class < 1:
            need = len(names) / num_train
            raise UserError(
                f"label budget {self.name} of {num_train:,} train images is {images} "
                f"image(s), fewer than one per class: class 0 ({names[0]!r}) and "
                f"{len(names) - 1} others would have no example. Use a fraction of at "
                f"least {need:.2g} or a per-class count."
            )
        return per_class


def _numbers(name, values, kind, example) -> list:
    """`values` as numbers of `kind`; a UserError naming the flag `name` otherwise."""
    try:
        return [kind(v) for v in values]
    except (TypeError, ValueError):
        shown = ",".join(map(str, values))
        raise UserError(
            f"--{name}={shown} is not allowed; expected {kind.__name__}s, e.g. {example}."
        ) from None


def parse_budgets(fractions=(), per_class=()) -> list:
    """Budgets from fractions (0.01 = 1%) and per-class counts (the --fractions and
    --per_class flags of amdim-finetune), smallest first."""
    budgets = [Budget(fraction=f) for f in _numbers("fractions", fractions, float, "0.01,0.1")]
    budgets += [Budget(per_class=n) for n in _numbers("per_class", per_class, int, "10,50")]
    if not budgets:
        raise UserError("No label budget given; pass fractions (e.g. 0.01,0.1) or per_class.")
    return budgets


def class_names(data) -> tuple:
    """Names of the classes, index order: the source's own (a folder's class directories,
    an npz file's `class_names`), else '0', '1', ..."""
    source = data_lib.opened(data)
    k = source.num_classes()
    names = source.class_names()
    if len(names) == k:
        return tuple(str(n) for n in names)
    return tuple(str(i) for i in range(k))


def labelled_subset(data, per_class, seed, names):
    """(images float32 [N, S, S, 3] eval views, labels int64 [N]): `per_class` per class.

    Seeded and class-balanced (data.make_eval_dataset(balanced=True)); the same seed
    gives the same images for every arm. A class left without an example is an error
    naming it; an unlabelled split is refused.
    """
    source, data = data, data_lib.data_section(data)
    split = data.train_split
    try:
        x, y = samples.eval_views(
            source, split, per_class * len(names), seed, balanced=True, batch=500
        )
    except ValueError as e:
        raise UserError(
            f"few-label evaluation needs labelled images in split {split!r} of "
            f"data.source={data.source!r} (class sub-directories, or labels other than -1): "
            f"{first_line(e)}"
        ) from e
    if not len(y):
        raise UserError(
            f"split {split!r} of data.source={data.source!r} has no labelled images (every "
            "label is -1); few-label evaluation needs class labels."
        )
    counts = np.bincount(y, minlength=len(names))
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        c = int(empty[0])
        raise UserError(
            f"class {c} ({names[c]!r}) has no labelled example in split {split!r} of "
            f"data.source={data.source!r}, so no classifier can learn it; add images of it "
            "or evaluate on data whose classes all have labels."
        )
    return x, y


def eval_split(data, max_examples):
    """(eval views [N, S, S, 3], labels [N]) of the eval split: a seeded sample of
    `max_examples` (0 = all of it)."""
    source, data = data, data_lib.data_section(data)
    seed = 0 if max_examples else None
    x, y = samples.eval_views(source, data.eval_split, max_examples, seed, batch=500)
    if not len(y):
        raise UserError(f"eval split {data.eval_split!r} has no labelled images.")
    return x, y


def holdout_split(y, fraction, seed) -> tuple:
    """(train indices, held-out indices) of labels y [N]: `fraction` of each class, at
    least one image and never all of a class, seeded. A class of one image stays whole in
    training, so a budget of one label per class has an empty held-out split."""
    held = samples.held_out(y, fraction, [seed, 7])  # [N] bool
    return np.flatnonzero(~held).astype(np.int64), np.flatnonzero(held).astype(np.int64)
