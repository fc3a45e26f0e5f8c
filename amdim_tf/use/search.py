"""Find images like these: exact cosine top-k over the output of `embed`.

    index = Index.load("emb")                      # r1.npy + index.tsv + embed.json of embed
    rows, sims = index.search(features, k=8)       # features float [Q, D]
    rows, sims = index.search(images, k=8, encoder="runs/c10")   # or images: uint8 [H, W, 3]
    index.ids[rows]                                # their ids (file paths or split:position)

`Index` owns one embedding: its L2-normalised features (float32 [N, D], in memory; the
only per-image array held), ids, labels and class names, and the record of the encoder
that produced it (embed.json). An index is data from anywhere: `Index.load` checks every
file and refuses a malformed one in one line naming it, and the index never chooses a
model to run. Query *images* go through the encoder the caller names (opened with
`loader.open_encoder`: work directory, SavedModel export or .keras file), which must be
the index's own, by the fingerprint embed.json records (`loader.weights_fingerprint`),
unless `allow_other_encoder`; they are read through the decode gate, must be at least
`pixels.min_image_side` px, and get the evaluation view embed used (`augment.eval_pixels`
of the encoder's preset). Query *features* are taken as they are. Either way a feature
size other than the index's is refused, naming both.

Search is exact (cosine = dot product of normalised rows) and blocked
(`neighbours.topk_cosine`, never an N x N matrix); BUILD.md gives the measured time and
its command. Rows of non-finite features (NaN or inf) have no cosine: search leaves them
out and warns how many, so they never rank above a real match.

`search_files` draws queries and neighbours (`report.thumbnail_grid`); `Index.thumbnails`
reads the indexed images back from the source embed.json names (files for a folder,
`split:position` for npz, TFRecord, TFDS, digits), so an index needs no stored copy of the
pixels; an image moved since is drawn as "missing" and counted.
"""

import dataclasses
import json
import os
import warnings

import numpy as np
import tensorflow as tf
from absl import logging

from amdim_tf import config_lib
from amdim_tf import data as data_lib
from amdim_tf.data import augment, decode
from amdim_tf.data.pixel_scale import to_uint8
from amdim_tf.data.sources import folder as folder_lib
from amdim_tf.errors import UserError, cause
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run import loader
from amdim_tf.run import pixels as pixels_lib
from amdim_tf.run.neighbours import finite_rows, l2_normalise, topk_cosine
from amdim_tf.use import embed, report

INDEX_FILE = embed.INDEX_FILE
SUMMARY_FILE = embed.SUMMARY_FILE


def _bad_index(path, what):
    return UserError(
        f"{path} {what}; it is not a file of an embed output: embed again with amdim-embed."
    )


# Labels above this are refused: the class-name table is as long as the largest label.
_MAX_LABEL = 2**20


def _read_index_tsv(path):
    ids, labels, names = [], [], []
    with open(path, encoding="utf-8", errors="backslashreplace") as f:
        header = f.readline().rstrip("\n")
        if header != "id\tlabel\tclass":
            raise UserError(
                f"{path} starts with {header[:80]!r}, not 'id\\tlabel\\tclass'; "
                "it is not an index.tsv written by amdim-embed."
            )
        for number, line in enumerate(f, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            name, label, cls = (line.split("\t") + ["", ""])[:3]
            try:
                value = int(label) if label else -1
            except ValueError:
                value = None
            if value is None or not -1 <= value < _MAX_LABEL:
                raise _bad_index(
                    path, f"line {number}: label {label[:40]!r} is not a class number (0 to "
                    f"{_MAX_LABEL - 1}, or empty when unlabelled)"
                )  # fmt: skip
            ids.append(name.replace("\\t", "\t").replace("\\n", "\n"))
            labels.append(value)
            names.append(cls)
    if not ids:
        raise _bad_index(path, "lists no images (an empty index)")
    return ids, np.asarray(labels, np.int64), names


def _read_summary(path):
    """embed.json as a dict, its fields that loading reads checked for type."""
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _bad_index(path, f"is not valid JSON ({cause(e)})") from None
    if not isinstance(summary, dict):
        raise _bad_index(path, f"holds a JSON {type(summary).__name__}, not an object")
    for field, kind in (("features", dict), ("data", dict), ("encoder_fingerprint", str)):
        if field in summary and not isinstance(summary[field], kind):
            raise _bad_index(
                path, f"field {field!r} is a {type(summary[field]).__name__}, not a {kind.__name__}"
            )
    return summary


def _open_features(path):
    """The feature file as a read-only memmap float [N, D] (N, D >= 1), or a UserError."""
    try:
        raw = np.load(path, mmap_mode="r")  # allow_pickle=False: no object arrays
    except (ValueError, OSError, EOFError) as e:
        raise _bad_index(path, f"is not a readable .npy array ({cause(e)})") from None
    if not isinstance(raw, np.ndarray):  # an .npz archive under the .npy name
        raw.close()
        raise _bad_index(path, "is an .npz archive, not an .npy array")
    if raw.ndim != 2 or raw.shape[1] == 0:
        raise _bad_index(path, f"holds an array of shape {list(raw.shape)}, not [images, features]")
    if raw.dtype.kind not in "fiu":
        raise _bad_index(path, f"holds {raw.dtype} values, not numbers")
    return raw


def _which(summary):
    which = summary.get("which", "latest")
    if which not in ("latest", "best"):
        raise UserError(
            f"{SUMMARY_FILE} records which={str(which)[:40]!r}, not 'latest' or 'best'; it is "
            "not an embed.json written by amdim-embed."
        )
    return which


def _check_query_image(image, name, least, image_size):
    """One-line UserError unless `image` is uint8 [H, W, 3] with sides of at least `least`."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise UserError(
            f"{name} has dtype {image.dtype}; query images are uint8 pixels 0..255 (multiply "
            "[0, 1] floats by 255, then cast to uint8)."
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise UserError(
            f"{name} has shape {list(image.shape)}, not [H, W, 3]; convert grey or RGBA "
            "images to RGB first."
        )
    if min(image.shape[:2]) < least:
        raise UserError(
            f"{name} is {image.shape[1]}x{image.shape[0]} px; an encoder of {image_size} px "
            f"takes images of at least {least}x{least} px (as every other path); use a "
            "larger image."
        )


@dataclasses.dataclass
class Index:
    """One embedding, searchable: see the module docstring.

    Attributes:
        directory: the embed output it was loaded from.
        features: float32 [N, D], L2-normalised rows of `key`.npy.
        ids: object array [N] of str (file paths, or split:position).
        labels: int64 [N] (-1 = unlabelled).
        class_names: tuple, class name per label (empty when unlabelled).
        summary: embed.json (which encoder, data and split).
    """

    directory: str
    features: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    class_names: tuple
    summary: dict
    key: str = GLOBAL
    _embedders: dict = dataclasses.field(default_factory=dict)  # (path, allow) -> Loaded
    _refs: object = None  # the features as a tensor, made at the first search
    _finite: object = None  # int64 [F]: the rows of finite features, the searchable ones

    @classmethod
    def load(cls, directory, key: str = GLOBAL) -> "Index":
        """Reads and checks an embed output directory: a missing, truncated, mixed or
        malformed file is refused in one line naming it (an index is data from anywhere)."""
        directory = os.fspath(directory)
        npy = os.path.join(directory, f"{key}.npy")
        tsv = os.path.join(directory, INDEX_FILE)
        json_path = os.path.join(directory, SUMMARY_FILE)
        for path in (npy, tsv, json_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{path} does not exist; {directory} is not a complete embed output "
                    f"(write one with amdim-embed --out={directory})."
                )
        summary = _read_summary(json_path)
        raw = _open_features(npy)
        ids, labels, names = _read_index_tsv(tsv)
        if raw.shape[0] != len(ids):
            raise UserError(
                f"{npy} holds {raw.shape[0]} rows but {tsv} lists {len(ids)} images: a "
                "truncated or mixed embedding; embed again with amdim-embed."
            )
        recorded = summary.get("features", {}).get(key)
        if recorded is not None and recorded != list(raw.shape):
            raise UserError(
                f"{npy} has shape {list(raw.shape)} but {SUMMARY_FILE} records "
                f"{str(recorded)[:80]}: files of two embeddings; embed again with amdim-embed."
            )
        features = np.empty(raw.shape, np.float32)
        for start in range(0, len(raw), 65536):  # the memmap read in bounded pieces
            features[start : start + 65536] = l2_normalise(raw[start : start + 65536])
        class_names = {}
        for label, name in zip(labels, names, strict=True):
            if label >= 0:
                class_names.setdefault(int(label), name)
        n_classes = max(class_names) + 1 if class_names else 0
        return cls(
            directory=directory,
            features=features,
            ids=np.asarray(ids, dtype=object),
            labels=labels,
            class_names=tuple(class_names.get(i, str(i)) for i in range(n_classes)),
            summary=summary,
            key=key,
        )

    def __len__(self):
        return len(self.features)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def labelled(self) -> bool:
        return bool(np.any(self.labels >= 0))

    def _built_with(self) -> str:
        """ "<description>, --encoder=<path>" of the encoder embed.json records."""
        path = self.summary.get("encoder_path")
        where = f", --encoder={path}" if isinstance(path, str) and path else ""
        return f"{str(self.summary.get('encoder', 'an encoder it does not name'))[:200]}{where}"

    def embedder(self, encoder=None, allow_other_encoder: bool = False):
        """The encoder at `encoder` (a path the caller chose), checked to be the one this
        index was embedded with: same feature size, and same fingerprint
        (`loader.weights_fingerprint`, recorded in embed.json) unless
        `allow_other_encoder`.

        The index's own record of its encoder is never opened: an index is data, and a
        model it names (a SavedModel is a graph of arbitrary ops) runs only when the user
        names it. An index embedded before fingerprints were recorded is searched with
        the size check alone, and a warning says so.
        """
        if encoder is None:
            raise UserError(
                f"query images of {self.directory} need an encoder, and an index never "
                "chooses it: pass --encoder (encoder=) yourself; the index was embedded "
                f"with {self._built_with()}; or query with features."
            )
        cache_key = (os.fspath(encoder), bool(allow_other_encoder))
        if self._embedders.get(cache_key) is not None:
            return self._embedders[cache_key]
        model = loader.open_encoder(encoder, _which(self.summary))
        zeros = tf.zeros([1, model.image_size, model.image_size, 3])
        dim = int(model.pooled(zeros, (self.key,))[self.key].shape[-1])
        if dim != self.dim:
            raise UserError(
                f"the encoder at {encoder} gives {self.key} of size {dim} but the index "
                f"{self.directory} holds size {self.dim}; query with the encoder it was "
                f"embedded with, {self._built_with()}."
            )
        recorded = self.summary.get("encoder_fingerprint")
        if recorded is None:
            logging.warning(
                "%s/%s records no encoder fingerprint (embedded before they were); only the "
                "feature size of %s is checked: embed again to have the encoder checked.",
                self.directory, SUMMARY_FILE, encoder,
            )  # fmt: skip
        elif recorded != model.fingerprint and not allow_other_encoder:
            raise UserError(
                f"the encoder at {encoder} ({model.fingerprint[:19]}) is not the one "
                f"{self.directory} was embedded with ({recorded[:19]}, "
                f"{self._built_with()}): its neighbours would be wrong; pass that encoder, "
                "or allow_other_encoder=True (--allow_other_encoder) to search anyway."
            )
        self._embedders[cache_key] = model
        return model

    def encode(self, images, encoder=None, allow_other_encoder=False, names=None) -> np.ndarray:
        """Features [Q, D] of images (uint8 [H, W, 3] each, any size of at least
        `pixels.min_image_side`) through `encoder` (see `embedder`), in embed's
        evaluation view. `names` name the images in errors (default: their positions)."""
        model = self.embedder(encoder, allow_other_encoder)
        names = names or [f"query image {i}" for i in range(len(images))]
        least = pixels_lib.min_image_side(model.image_size)
        for image, name in zip(images, names, strict=True):
            _check_query_image(image, name, least, model.image_size)
        pixels = tf.stack([augment.eval_pixels(tf.constant(im), model.preset) for im in images])
        return np.concatenate(
            [
                model.pooled_unit_views(pixels[i : i + 256], (self.key,))[self.key].numpy()
                for i in range(0, len(pixels), 256)
            ]
        )

    def search(self, queries, k: int = 8, encoder=None, allow_other_encoder=False, names=None):
        """(rows int64 [Q, k], cosines float32 [Q, k]) of the k nearest indexed images.

        queries: features float [Q, D] (or [D]), taken as they are; or images, a list of
            uint8 [H, W, 3] arrays (or one uint8 [Q, H, W, 3] array), which go through
            `encoder`, a path the caller must give (see `embedder`). `self.ids[rows]`
            names the neighbours. `names` name image queries in errors.
        """
        array = None if isinstance(queries, (list, tuple)) else np.asarray(queries)
        if array is None or (array.ndim == 4 and array.dtype == np.uint8):
            features = self.encode(list(queries), encoder, allow_other_encoder, names)
        else:
            if array.ndim not in (1, 2) or array.dtype.kind not in "fiu":
                raise UserError(
                    f"queries of shape {list(array.shape)} and dtype {array.dtype}: give "
                    f"features [Q, {self.dim}] ([{self.dim}] for one; flatten r1 maps "
                    "first), or images as a list of uint8 [H, W, 3] arrays."
                )
            features = np.atleast_2d(array.astype(np.float32))
            if features.shape[1] != self.dim:
                raise UserError(
                    f"query features have size {features.shape[1]} but the index "
                    f"{self.directory} holds {self.key} of size {self.dim}; embed the "
                    "queries with the index's encoder."
                )
        finite = self.finite_rows()
        if not len(finite):
            raise UserError(
                f"every one of the {len(self)} rows of {self.directory}/{self.key}.npy is NaN "
                "or inf, so nothing can be searched; embed again with a working encoder."
            )
        if self.skipped_nonfinite:
            warnings.warn(
                f"{self.skipped_nonfinite} of the {len(self)} rows of {self.directory}/"
                f"{self.key}.npy are NaN or inf: left out of the search.",
                stacklevel=2,
            )
        if self._refs is None:
            usable = self.features if len(finite) == len(self) else self.features[finite]
            self._refs = tf.constant(usable)
        rows, sims = topk_cosine(l2_normalise(features), self._refs, min(int(k), len(finite)))
        return finite[rows], sims

    def finite_rows(self) -> np.ndarray:
        """int64 [F]: the rows with finite features, the only ones with a cosine."""
        if self._finite is None:
            self._finite = np.flatnonzero(finite_rows(self.features)).astype(np.int64)
        return self._finite

    @property
    def skipped_nonfinite(self) -> int:
        """How many rows have NaN or inf features (never searched, never counted)."""
        return len(self) - len(self.finite_rows())

    def thumbnails(self, rows, size: int = 48) -> np.ndarray:
        """uint8 [len(rows), size, size, 3]: the indexed images, read back from their source
        (black where an image file is gone: see `thumbnails_found`)."""
        return self.thumbnails_found(rows, size)[0]

    def thumbnails_found(self, rows, size: int = 48) -> tuple:
        """(thumbnails uint8 [n, size, size, 3], found bool [n]) of the indexed images, read
        back from their source; an image file moved, deleted or replaced since it was
        indexed is not found (its thumbnail stays black), never an error."""
        rows = [int(r) for r in rows]
        out = np.zeros((len(rows), size, size, 3), np.uint8)
        found = np.ones(len(rows), bool)
        preset = self.summary.get("preset") or augment.preset_for("", 32)
        by_part = {}
        for i, row in enumerate(rows):
            name = str(self.ids[row])
            part, sep, pos = name.rpartition(":")
            if sep and pos.isdigit() and not os.path.exists(name):
                by_part.setdefault(part, []).append((int(pos), i))
            else:
                try:
                    out[i] = _thumb(decode.decode_file(tf.constant(name)), preset, size)
                except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError):
                    found[i] = False
        if by_part:
            source = self._source()
            for part, wanted in by_part.items():
                where = dict(wanted)
                positions = tf.constant(sorted(where), tf.int64)
                examples = source.examples(part)
                ds = examples.ds.enumerate().filter(
                    lambda j, x, p=positions: tf.reduce_any(tf.equal(p, j))
                )
                for j, (payload, _) in ds.as_numpy_iterator():
                    out[where[int(j)]] = _thumb(examples.decode(payload), preset, size)
        return out, found

    def _source(self):
        data = config_lib.base_config().data
        recorded = self.summary.get("data", {})
        for key, value in recorded.items():
            if value is not None:
                data[key] = value
        data.image_size = int(self.summary.get("image_size", data.image_size))
        data.cache = False
        return data_lib.open_source(data)


def same_encoder(a: "Index", b: "Index") -> bool:
    """Whether two indexes were embedded by one encoder: by their fingerprints, or, for
    an index from before fingerprints, by the real path and checkpoint choice of the
    encoder (so `./run` and its absolute path agree), else by the recorded description."""
    fa, fb = (ix.summary.get("encoder_fingerprint") for ix in (a, b))
    if fa and fb:
        return fa == fb
    pa, pb = (ix.summary.get("encoder_path") for ix in (a, b))
    if isinstance(pa, str) and isinstance(pb, str) and pa and pb:
        where = [(os.path.realpath(p), ix.summary.get("which")) for p, ix in ((pa, a), (pb, b))]
        return where[0] == where[1]
    return a.summary.get("encoder") == b.summary.get("encoder")


def _thumb(image, preset, size):
    pixels = augment.eval_pixels(image, preset)
    small = tf.image.resize(pixels, [size, size], antialias=True)
    return to_uint8(small).numpy()


def read_query_images(path, max_pixels: int | None = None) -> tuple[list, list]:
    """(names, images uint8 [H, W, 3]) of an image file or of every image in a folder.

    Read as every source reads images: the decode gate first (`decode.refusal`, bound
    `max_pixels`, default the config's `data.max_pixels`), then `decode.decode_file`.
    A file that is too large or cannot be decoded is refused with its name (a query must
    not vanish).
    """
    path = os.fspath(path)
    if max_pixels is None:
        max_pixels = int(config_lib.base_config().data.max_pixels)
    if os.path.isdir(path):
        names = [os.fsdecode(p) for p in folder_lib.list_images(path)]
        if not names:
            raise FileNotFoundError(
                f"{path} holds no image files ({', '.join(decode.IMAGE_EXTENSIONS)})."
            )
    elif os.path.isfile(path):
        names = [path]
    else:
        raise FileNotFoundError(f"query {path} does not exist; pass an image file or a folder.")
    images = []
    for name in names:
        too_large = decode.refusal(decode.read_head(name), max_pixels)
        if too_large:
            raise UserError(f"query image {name} is refused: {too_large}.")
        try:
            images.append(decode.decode_file(tf.constant(name)).numpy())
        except (tf.errors.OpError, ValueError) as e:
            raise UserError(
                f"cannot decode query image {name} ({cause(e)}); remove or replace it."
            ) from None
    return names, images


def search_files(
    index_dir, query, k: int = 8, out_png=None, encoder=None, thumb: int = 48,
    allow_other_encoder: bool = False,
):  # fmt: skip
    """Searches the index at `index_dir` with the image file or folder `query`.

    encoder: the encoder to embed the queries with (a path; required, and checked to be
    the index's own unless `allow_other_encoder`: see `Index.embedder`).

    Returns a list of {"query": name, "neighbours": [{"id", "label", "class", "cosine"}]}
    (nearest first) and writes `out_png` (queries and neighbours) when given.
    """
    index = Index.load(index_dir)
    model = index.embedder(encoder, allow_other_encoder)  # before reading any query
    names, images = read_query_images(query)
    rows, sims = index.search(images, k, encoder, allow_other_encoder, names)
    results = []
    for name, r, s in zip(names, rows, sims, strict=True):
        neighbours = []
        for row, sim in zip(r, s, strict=True):
            label = int(index.labels[row])
            neighbours.append(
                {
                    "id": str(index.ids[row]),
                    "label": label if label >= 0 else None,
                    "class": index.class_names[label] if label >= 0 else None,
                    "cosine": round(float(sim), 4),
                }
            )
        results.append({"query": name, "neighbours": neighbours})
    if out_png:
        preset = model.preset
        queries = np.stack([_thumb(tf.constant(im), preset, thumb) for im in images])
        thumbs, found = index.thumbnails_found(rows.reshape(-1), thumb)
        cells = [
            [query] + [t if ok else None for t, ok in zip(ts, oks, strict=True)]
            for query, ts, oks in zip(
                queries, thumbs.reshape(rows.shape + thumbs.shape[1:]), found.reshape(rows.shape),
                strict=True,
            )
        ]  # fmt: skip
        titles = [
            [os.path.basename(n)[:14]] + [f"{v:.3f}" for v in s]
            for n, s in zip(names, sims, strict=True)
        ]
        header = f"{rows.shape[1]} nearest of {len(index):,} by cosine of {index.key}"
        if not found.all():
            missing = int(np.sum(~found))
            header += f"; {missing} image(s) no longer at their indexed path"
            warnings.warn(
                f"{missing} of the {found.size} neighbour images are no longer where "
                f"{index.directory} indexed them (moved or deleted): drawn as 'missing'.",
                stacklevel=2,
            )
        report.thumbnail_grid(out_png, cells, titles, header)
    return results
