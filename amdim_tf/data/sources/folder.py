"""The "folder" source, and the one reader of image files every consumer goes through.

A folder is read as its user keeps it, the same way by every command; one key says how:

- `data.labels="none"` (the default): every image under `data.path`, loose or in
  sub-folders at any depth, is unlabelled (split part "unlabeled", label -1), and so is
  every image under `data.unlabeled_path`; either path alone is enough. Pretraining
  reads them all; the online probes and the kNN monitor are off (they need labels) and a
  labelled split ("train", "test") is refused with a line naming this key.
- `data.labels="folders"`: the sub-directories of `data.path` are the classes,
  `data.path/class_x/**/*.{jpg,jpeg,png,bmp,gif,webp}`, or `data.path/<split>/class_x/...`
  when such a split dir exists; `data.unlabeled_path` adds unlabelled images to
  pretraining. Images beside the class folders (no class's) are skipped, counted and
  named, in one line that says how to read them instead; a folder without class
  sub-directories is refused.

When `data.path` holds sub-folders and `data.labels="none"`, one line says what is read
and how to read the sub-folders as classes instead, before any work.

Labels are class names: every labelled split is numbered by the class names of the
training split (data.train_split), so a class missing from the test split keeps its
number ("red" is 2 in train {blue, green, red} and in test {blue, red}); a class of
another split that the training split does not have is refused in one line naming it
(no classifier trained on that split could predict it, and a number would silently mean
another class).

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

from amdim_tf.data import decode, samples
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
# data.labels: how data.path is read (module docstring).
LABELS = ("none", "folders")
MAX_LOGGED = 5  # loose images named in the warning


def held_out(labels: np.ndarray) -> np.ndarray:
    """bool [N]: the held-out rows of a folder read whole (`samples.held_out`, this
    module's fraction and seed)."""
    return samples.held_out(labels, HOLDOUT_FRACTION, HOLDOUT_SEED)


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


def labels_mode(data) -> str:
    """data.labels, checked: "none" (every image is unlabelled) or "folders"."""
    mode = data.get("labels", "none")
    if mode not in LABELS:
        raise UserError(
            f"data.labels={mode!r} is not allowed; use 'none' (every image under data.path "
            "is unlabelled) or 'folders' (its sub-directories are the classes)."
        )
    return mode


def _loose_images(directory) -> list:
    """Files directly in `directory` named as images, sorted, as bytes paths."""
    with os.scandir(os.fsdecode(directory)) as entries:
        names = sorted(
            e.name
            for e in entries
            if e.name.lower().endswith(decode.IMAGE_EXTENSIONS)
            and not e.name.startswith(".")
            and not e.is_dir()
        )
    return [os.fsencode(os.path.join(os.fsdecode(directory), n)) for n in names]


def _sub_folders(directory) -> list:
    """Names of the visible sub-directories of `directory`, sorted."""
    return sorted(
        d
        for d in os.listdir(directory)
        if not d.startswith(".") and os.path.isdir(os.path.join(directory, d))
    )


def _say_unlabelled_layout(root, listed):
    """One line, when data.path has sub-folders, on how data.labels="none" reads it."""
    subs = _sub_folders(root)
    if not subs:
        return
    loose = len(_loose_images(root))
    where = f"{loose} images beside " if loose else ""
    logging.warning(
        "%s holds %s%d images in %d sub-folder(s) (%s): reading all %d as unlabelled images "
        "(data.labels='none'); set data.labels=folders to read its sub-folders as classes.",
        root,
        where,
        len(listed) - loose,
        len(subs),
        ", ".join(subs[:3]) + (", ..." if len(subs) > 3 else ""),
        len(listed),
    )


def _unreadable(path, max_pixels):
    """Why the file at `path` (bytes) cannot be an image, before decoding it; or None."""
    try:
        info = os.stat(path)  # follows symlinks: a dangling or looping one fails
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_size == 0:
            return "an empty file (0 bytes)"
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
        self.labels_by_folder = labels_mode(data) == "folders"

    def has_labels(self) -> bool:
        """Whether data.path is read as class folders (data.labels="folders")."""
        return self.labels_by_folder and bool(self.data.path)

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
        classes = _sub_folders(class_root)
        if not classes:
            raise UserError(
                f"{class_root!r} has no class sub-directories; data.labels='folders' expects "
                "data.path/class_x/*.jpg (or data.path/<split>/class_x/*.jpg). Set "
                "data.labels=none to read its images as unlabelled."
            )
        return classes

    def _training_classes(self, part):
        """The class names that number every labelled split: the training split's."""
        train = [p for p in split_parts(self.data.train_split) if not is_unlabeled(p)]
        return tuple(self._classes(self.class_root(train[0] if train else part)))

    def _require_labels(self, part):
        if not self.labels_by_folder:
            raise UserError(
                f"split {part!r} needs class labels, but data.labels='none' reads "
                f"{self.data.path or self.data.unlabeled_path!r} as unlabelled images; set "
                "data.labels=folders if the sub-directories of data.path are the classes."
            )

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
            files, bad, where = self._unlabelled_files(strict, max_pixels)
            labels, names = [UNLABELED] * len(files), ()
        else:
            files, labels, bad, names = self._labelled_files(part, strict, max_pixels)
            where = f"{self.class_root(part)} (data.path)"
        if not files:
            raise UserError(
                f"No decodable image files for split {part!r} under {where}; fix the path "
                f"(images are {'/'.join(e[1:] for e in decode.IMAGE_EXTENSIONS)} files)."
            )
        return _Scan(files, np.array(labels, np.int32), [os.fsdecode(p) for p in bad], names)

    def _unlabelled_files(self, strict, max_pixels):
        """(files, bad, where) of the unlabelled part: data.unlabeled_path, and data.path
        itself under data.labels="none"."""
        roots = []
        if not self.data.path and not self.data.unlabeled_path:
            raise FileNotFoundError(
                "No data path given; set data.path (--config.data.path=DIR) or data.unlabeled_path."
            )
        if not self.labels_by_folder and self.data.path:
            require_path(self.data.path, "data.path")
            roots.append((self.data.path, "data.path"))
        if self.data.unlabeled_path:
            require_path(self.data.unlabeled_path, "data.unlabeled_path")
            roots.append((self.data.unlabeled_path, "data.unlabeled_path"))
        files, bad = [], []
        for root, key in roots:
            listed = list_images(root)
            if key == "data.path":
                _say_unlabelled_layout(root, listed)
            good, skipped = _valid_files(listed, strict, f"{root} ({key})", max_pixels)
            files, bad = files + good, bad + skipped
        return files, bad, " and ".join(f"{r} ({k})" for r, k in roots)

    def _labelled_files(self, part, strict, max_pixels):
        """(files, labels, bad, class names) of a labelled part, numbered by the names of
        the training split's classes."""
        self._require_labels(part)
        class_root = self.class_root(part)
        names = self._training_classes(part)
        own = self._classes(class_root)
        unknown = [c for c in own if c not in names]
        if unknown:
            raise UserError(
                f"class {unknown[0]!r} of split {part!r} ({class_root}) is not a class of "
                f"data.train_split {self.data.train_split!r} {list(names)}; every split is "
                "labelled by the training split's class names. Add its images to the "
                "training split, or remove the folder."
            )
        listed, listed_labels = [], []
        for name in own:
            found = list_images(os.path.join(class_root, name))
            listed += found
            listed_labels += [names.index(name)] * len(found)
        where = f"{class_root} (data.path)"
        good, bad = _valid_files(listed, strict, where, max_pixels)
        good = set(good)
        keep = [i for i, f in enumerate(listed) if f in good]
        files, labels = [listed[i] for i in keep], [listed_labels[i] for i in keep]
        return files, labels, bad + self._outside_classes(class_root), names

    def _outside_classes(self, class_root):
        """Images beside the class folders (no class's): named in one line, skipped."""
        roots = [class_root]
        if os.path.normpath(class_root) != os.path.normpath(self.data.path):
            roots.append(self.data.path)  # beside the split directories
        loose = [p for r in roots for p in _loose_images(r)]
        if loose:
            logging.warning(
                "Skipping %d images outside its class folders under %s (data.labels='folders' "
                "reads only the sub-folders as classes): %s%s. Move them into a class folder, "
                "or set data.labels=none to read every image as unlabelled.",
                len(loose),
                self.data.path,
                ", ".join(repr(os.fsdecode(p)) for p in loose[:MAX_LOGGED]),
                ", ..." if len(loose) > MAX_LOGGED else "",
            )
        return loose

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
        """The class names that number the labels of `part` (of every labelled part):
        data.train_split's class sub-directories, sorted; () when unlabelled."""
        part = part or split_parts(self.data.train_split)[0]
        if is_unlabeled(part) or not self.has_labels():
            return ()
        return self._training_classes(part)

    def has_unlabeled(self) -> bool:
        return bool(self.data.unlabeled_path)

    def pretrain_parts(self, parts: list) -> list:
        if not self.has_labels():
            # data.labels="none", or data.unlabeled_path alone: every image is unlabelled.
            return [UNLABELED_SPLIT]
        return super().pretrain_parts(parts)

    def is_flat(self) -> bool:
        """Whether data.path is read as unlabelled images (data.labels="none"), with or
        without sub-folders: consumers then read split "unlabeled"."""
        return bool(self.data.path) and not self.labels_by_folder

    def flat_as_unlabeled(self) -> "FolderSource":
        """The source that reads data.path as unlabelled images (split "unlabeled"): this
        one, whose "unlabeled" part already does."""
        return self
