"""The "folder" source, and the one reader of image files every consumer goes through.

`data.path/class_x/*.{jpg,jpeg,png,bmp,gif,webp}` (labels are the sorted class dirs), or
`data.path/<split>/class_x/...` when such a split dir exists; plus an optional flat
folder of unlabeled images, `data.unlabeled_path`, used for pretraining only.

Held-out split. When data.path has neither a data.train_split nor a data.eval_split
directory, both splits would read the same class dirs, and every tool would score the
images it trained its head on (issue 20: 100% printed on 80 images that held the 20
training labels). Instead, a seeded, class-stratified HOLDOUT_FRACTION of each class
(at least one image of any class with two or more, seed HOLDOUT_SEED; the same files
give the same split on every run and in every tool) is data.eval_split, the rest
data.train_split; a warning says so with the sizes and the seed. Other split names
still read all the class dirs. Training,
evaluation, embedding, fine-tuning and the figures all read files through
`FolderSource`, so a file that one of them reads or skips, all of them do.

Listing: every file whose name ends in an extension of `decode.IMAGE_EXTENSIONS` (any
case, hidden names excluded), in sorted order. The scan of a split part (once per opened
source) then skips, counts and names what cannot be an image: a name that is not a
regular file (a FIFO, a device: opening one could hang), a dangling or looping symlink,
a file that cannot be read, an image the decode gate refuses (more than
`data.max_pixels`) and one that does not decode; `data.strict=True` fails naming the
first instead. File names are handled as bytes, so names that are not UTF-8 are read like
any other.
"""

import dataclasses
import os
import stat

import numpy as np
import tensorflow as tf
from absl import logging

from amdim_tf.data import decode
from amdim_tf.data.sources.base import (
    UNLABELED,
    UNLABELED_SPLIT,
    Examples,
    Source,
    decodable,
    is_unlabeled,
    report_bad,
    require_path,
    split_parts,
    why_undecodable,
)
from amdim_tf.errors import UserError

# The held-out split of a folder without split directories (module docstring).
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0
_WHOLE = "\0whole"  # the scan cache's key for data.path read whole, before the split


def held_out(labels: np.ndarray, fraction: float = HOLDOUT_FRACTION, seed: int = HOLDOUT_SEED):
    """bool [N]: the seeded, class-stratified held-out rows of `labels` (int [N]):
    round(fraction * n) of each class of n images, at least 1 and at most n - 1."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = min(max(round(fraction * len(rows)), 1), len(rows) - 1)
        mask[rng.permutation(rows)[:k]] = True
    return mask


def list_images(directory: str | bytes) -> list:
    """Files under `directory` named as images, in sorted order, as bytes paths.

    Bytes, because a name that is not valid UTF-8 (a Latin-1 name from an old archive)
    cannot become a tf.string from Python's surrogate-escaped str; its bytes can.
    Symlinked sub-directories are not followed (a `sub -> .` link would list every file
    again); what each listed name is, is checked by the scan.
    """
    files = []
    # Walked as str (surrogate-escaped), so the sorted order is the one runs had.
    for dirpath, dirnames, filenames in os.walk(os.fsdecode(directory)):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(decode.IMAGE_EXTENSIONS) and not name.startswith("."):
                files.append(os.fsencode(os.path.join(dirpath, name)))
    return files


def _unreadable(path, max_pixels):
    """Why the file at `path` (bytes) cannot be an image, before decoding it; or None."""
    try:
        mode = os.stat(path).st_mode  # follows symlinks: a dangling or looping one fails
        if not stat.S_ISREG(mode):
            return "not a regular file"
        head = decode.read_head(path)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    return decode.refusal(head, max_pixels)


@dataclasses.dataclass(frozen=True)
class _Scan:
    """What the scan of one split part found."""

    files: list  # bytes paths that decode, in order
    labels: np.ndarray  # int32 [len(files)]
    skipped: list  # str paths that were listed but cannot be read, in order
    class_names: tuple  # () for the unlabeled part


def _valid_files(paths, strict, where, max_pixels):
    """(paths that decode, paths skipped): each file (bytes path) is checked once."""
    if not paths:
        return [], []
    refused = {}
    for p in paths:
        reason = _unreadable(p, max_pixels)
        if reason:
            refused[p] = reason
    rest = [p for p in paths if p not in refused]
    good = set()
    if rest:
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(rest), tf.constant(rest)))
        good = decodable(ds, decode.decode_file)
    bad = [p for p in paths if p not in good]

    def why():
        return refused.get(bad[0]) or why_undecodable(decode.decode_file, bad[0])

    names = [repr(os.fsdecode(p)) for p in bad]
    report_bad(names, len(paths), "image file", f"under {where}", strict, why)
    return [p for p in paths if p in good], bad


class FolderSource(Source):
    """Image files in class sub-directories, plus an optional unlabeled flat folder."""

    def __init__(self, data):
        super().__init__(data)
        self._scans = {}  # part -> _Scan

    def class_root(self, part: str) -> str:
        """The directory whose sub-directories are the classes of split `part`."""
        root = self.data.path
        require_path(root, "data.path")
        split_root = os.path.join(root, part)
        if os.path.isdir(split_root):
            return split_root
        logging.log_first_n(
            logging.INFO,
            "No %s/ under %s: split %r reads the class dirs of data.path itself.",
            1,
            part,
            root,
            part,
        )
        return root

    @staticmethod
    def _classes(class_root):
        classes = sorted(
            d
            for d in os.listdir(class_root)
            if not d.startswith(".") and os.path.isdir(os.path.join(class_root, d))
        )
        if not classes:
            raise UserError(
                f"{class_root!r} has no class sub-directories; the folder source expects "
                "data.path/class_x/*.jpg (or data.path/<split>/class_x/*.jpg)."
            )
        return classes

    def _holdout_side(self, part):
        """ "train" / "eval" when `part` is data.train_split's / data.eval_split's
        labelled part and data.path has a directory for neither; else None."""
        if is_unlabeled(part) or not self.data.path:
            return None
        train = [p for p in split_parts(self.data.train_split) if not is_unlabeled(p)]
        evals = split_parts(self.data.eval_split)
        if len(train) != 1 or len(evals) != 1 or train[0] == evals[0]:
            return None
        if part not in (train[0], evals[0]):
            return None
        if any(os.path.isdir(os.path.join(self.data.path, p)) for p in (train[0], evals[0])):
            return None
        return "train" if part == train[0] else "eval"

    def _scan(self, part):
        if part in self._scans:
            return self._scans[part]
        side = self._holdout_side(part)
        if side is None:
            scan = self._scan_part(part)
        else:
            if _WHOLE not in self._scans:  # both sides read data.path itself: one scan
                self._scans[_WHOLE] = self._scan_part(part)
                held = held_out(self._scans[_WHOLE].labels)
                logging.warning(
                    "%s has no %s/ or %s/ directory: holding out %d of its %d images "
                    "(%.0f%% of each class, seed %d) as data.eval_split; %d images are "
                    "data.train_split. Make split directories to choose them yourself.",
                    self.data.path,
                    split_parts(self.data.train_split)[0],
                    split_parts(self.data.eval_split)[0],
                    int(np.sum(held)),
                    len(held),
                    100 * HOLDOUT_FRACTION,
                    HOLDOUT_SEED,
                    int(np.sum(~held)),
                )
            whole = self._scans[_WHOLE]
            mask = held_out(whole.labels)
            if side == "train":
                mask = ~mask
            files = [f for f, keep in zip(whole.files, mask, strict=True) if keep]
            scan = _Scan(files, whole.labels[mask], whole.skipped, whole.class_names)
        self._scans[part] = scan
        return scan

    def _scan_part(self, part):
        strict, max_pixels = self.data.strict, int(self.data.max_pixels)
        if is_unlabeled(part):
            unlabeled = self.data.unlabeled_path
            require_path(unlabeled, "data.unlabeled_path")
            where = f"{unlabeled} (data.unlabeled_path)"
            files, bad = _valid_files(list_images(unlabeled), strict, where, max_pixels)
            labels, names = [UNLABELED] * len(files), ()
        else:
            class_root = self.class_root(part)
            names = tuple(self._classes(class_root))
            listed, listed_labels = [], []
            for label, name in enumerate(names):
                found = list_images(os.path.join(class_root, name))
                listed += found
                listed_labels += [label] * len(found)
            where = f"{class_root} (data.path)"
            good, bad = _valid_files(listed, strict, where, max_pixels)
            good = set(good)
            keep = [i for i, f in enumerate(listed) if f in good]
            files, labels = [listed[i] for i in keep], [listed_labels[i] for i in keep]
        if not files:
            raise UserError(f"No decodable image files for split {part!r} of the folder source.")
        return _Scan(files, np.array(labels, np.int32), [os.fsdecode(p) for p in bad], names)

    def examples(self, part: str) -> Examples:
        scan = self._scan(part)
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(scan.files), tf.constant(scan.labels)))
        return Examples(ds, decode.decode_file)

    def labels(self, part: str) -> np.ndarray:
        return self._scan(part).labels

    def skipped(self, part: str) -> list:
        """Paths (str) listed as images in `part` that cannot be read or decoded."""
        return list(self._scan(part).skipped)

    def num_classes(self) -> int:
        return len(self.class_names())

    def class_names(self, part: str | None = None) -> tuple:
        """The class sub-directories of `part` (default: of data.train_split), sorted."""
        part = part or split_parts(self.data.train_split)[0]
        if is_unlabeled(part):
            return ()
        return tuple(self._classes(self.class_root(part)))

    def has_unlabeled(self) -> bool:
        return bool(self.data.unlabeled_path)

    def pretrain_parts(self, parts: list) -> list:
        if not self.data.path and self.data.unlabeled_path:
            # Pretraining from an unlabeled folder alone is allowed; probes need data.path.
            return [UNLABELED_SPLIT]
        return super().pretrain_parts(parts)

    def is_flat(self) -> bool:
        """Whether data.path is a folder of images without class sub-directories."""
        root = self.data.path
        if not root or not os.path.isdir(root):
            return False
        return not any(
            not d.startswith(".") and os.path.isdir(os.path.join(root, d)) for d in os.listdir(root)
        )

    def flat_as_unlabeled(self) -> "FolderSource":
        """A source reading data.path as a flat folder of unlabeled images (split "unlabeled")."""
        data = type(self.data)(self.data.to_dict())
        data.unlabeled_path, data.path = data.path, ""
        return FolderSource(data)
