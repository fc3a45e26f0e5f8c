"""Find images like these: exact cosine top-k over the output of `embed`.

    index = Index.load("emb")                      # r1.npy + index.tsv + embed.json of embed
    rows, sims = index.search(features, k=8)       # features float [Q, D]
    rows, sims = index.search(images, k=8)         # or images: uint8 [H, W, 3] each
    index.ids[rows]                                # their ids (file paths or split:position)

`Index` owns one embedding: its L2-normalised features (float32 [N, D], in memory; the
only per-image array held), ids, labels and class names, and the record of the encoder
that produced it (embed.json). Query *images* go through that same encoder, reopened with
the project's loader (`loader.open_encoder`: work directory, SavedModel export or .keras
file), in the same evaluation view embed used (`augment.eval_pixels` of the encoder's
preset); query *features* are taken as they are. Either way a feature size other than the
index's is refused, naming both.

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

from amdim_tf import config_lib
from amdim_tf import data as data_lib
from amdim_tf.data import augment, decode
from amdim_tf.data.pixel_scale import to_uint8
from amdim_tf.data.sources import folder as folder_lib
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run import loader
from amdim_tf.run.neighbours import finite_rows, l2_normalise, topk_cosine
from amdim_tf.use import embed, report

INDEX_FILE = embed.INDEX_FILE
SUMMARY_FILE = embed.SUMMARY_FILE


def _read_index_tsv(path):
    ids, labels, names = [], [], []
    with open(path, encoding="utf-8", errors="backslashreplace") as f:
        header = f.readline().rstrip("\n")
        if header != "id\tlabel\tclass":
            raise ValueError(
                f"{path} starts with {header!r}, not 'id\\tlabel\\tclass'; "
                "it is not an index.tsv written by tools/embed.py."
            )
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            name, label, cls = (line.split("\t") + ["", ""])[:3]
            ids.append(name.replace("\\t", "\t").replace("\\n", "\n"))
            labels.append(int(label) if label else -1)
            names.append(cls)
    return ids, np.asarray(labels, np.int64), names


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
    _embedder: object = None
    _refs: object = None  # the finite features as a tensor, made at the first search
    _finite: object = None  # int64 [F]: the rows of finite features, the searchable ones

    @classmethod
    def load(cls, directory, key: str = GLOBAL) -> "Index":
        """Reads and checks an embed output directory (refusing a truncated one)."""
        directory = os.fspath(directory)
        npy = os.path.join(directory, f"{key}.npy")
        tsv = os.path.join(directory, INDEX_FILE)
        for path in (npy, tsv, os.path.join(directory, SUMMARY_FILE)):
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"{path} does not exist; {directory} is not a complete embed output "
                    f"(write one with tools/embed.py --out={directory})."
                )
        with open(os.path.join(directory, SUMMARY_FILE)) as f:
            summary = json.load(f)
        raw = np.load(npy, mmap_mode="r")
        ids, labels, names = _read_index_tsv(tsv)
        if raw.ndim != 2 or raw.shape[0] != len(ids):
            raise ValueError(
                f"{npy} holds {raw.shape[0] if raw.ndim else 0} rows but {tsv} lists "
                f"{len(ids)} images: a truncated or mixed embedding; embed again with "
                "tools/embed.py."
            )
        recorded = summary.get("features", {}).get(key)
        if recorded is not None and list(recorded) != list(raw.shape):
            raise ValueError(
                f"{npy} has shape {list(raw.shape)} but {SUMMARY_FILE} records {recorded}: "
                "files of two embeddings; embed again with tools/embed.py."
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

    def embedder(self, encoder=None):
        """The encoder of this index (reopened from embed.json), or `encoder` (a path)
        checked to give this index's feature size."""
        if encoder is None and self._embedder is not None:
            return self._embedder
        path = encoder or self.summary.get("encoder_path")
        if not path:
            raise ValueError(
                f"{self.directory}/{SUMMARY_FILE} does not record the encoder's path (an "
                "older embed); pass encoder=PATH (--encoder) or query with features."
            )
        model = loader.open_encoder(path, self.summary.get("which", "latest"))
        zeros = tf.zeros([1, model.image_size, model.image_size, 3])
        probe = model.pooled(zeros, (self.key,))
        dim = int(probe[self.key].shape[-1])
        if dim != self.dim:
            raise ValueError(
                f"the encoder at {path} gives {self.key} of size {dim} but the index "
                f"{self.directory} holds size {self.dim} (embedded with "
                f"{self.summary.get('encoder', '?')}); query with the index's encoder."
            )
        if encoder is None:
            self._embedder = model
        return model

    def encode(self, images, encoder=None) -> np.ndarray:
        """Features [Q, D] of images (uint8 [H, W, 3] each, any size) through the encoder,
        in embed's evaluation view."""
        model = self.embedder(encoder)
        pixels = tf.stack([augment.eval_pixels(tf.constant(im), model.preset) for im in images])
        return np.concatenate(
            [
                model.pooled_unit_views(pixels[i : i + 256], (self.key,))[self.key].numpy()
                for i in range(0, len(pixels), 256)
            ]
        )

    def search(self, queries, k: int = 8, encoder=None):
        """(rows int64 [Q, k], cosines float32 [Q, k]) of the k nearest indexed images.

        queries: features float [Q, D] (or [D]), or a list of images (uint8 [H, W, 3]),
            which go through the index's encoder (or `encoder`, a path). `self.ids[rows]`
            names the neighbours.
        """
        if isinstance(queries, (list, tuple)) or np.asarray(queries).ndim >= 3:
            features = self.encode(list(queries), encoder)
        else:
            features = np.atleast_2d(np.asarray(queries, np.float32))
            if features.shape[1] != self.dim:
                raise ValueError(
                    f"query features have size {features.shape[1]} but the index "
                    f"{self.directory} holds {self.key} of size {self.dim}; embed the "
                    "queries with the index's encoder."
                )
        finite = self.finite_rows()
        if not len(finite):
            raise ValueError(
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


def _thumb(image, preset, size):
    pixels = augment.eval_pixels(image, preset)
    small = tf.image.resize(pixels, [size, size], antialias=True)
    return to_uint8(small).numpy()


def read_query_images(path) -> tuple[list, list]:
    """(names, images uint8 [H, W, 3]) of an image file or of every image in a folder.

    A file that cannot be decoded is refused with its name (a query must not vanish).
    """
    path = os.fspath(path)
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
        try:
            images.append(decode.decode_file(tf.constant(name)).numpy())
        except (tf.errors.OpError, ValueError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ValueError(
                f"cannot decode query image {name} ({reason}); remove or replace it."
            ) from None
    return names, images


def search_files(index_dir, query, k: int = 8, out_png=None, encoder=None, thumb: int = 48):
    """Searches the index at `index_dir` with the image file or folder `query`.

    Returns a list of {"query": name, "neighbours": [{"id", "label", "class", "cosine"}]}
    (nearest first) and writes `out_png` (queries and neighbours) when given.
    """
    index = Index.load(index_dir)
    names, images = read_query_images(query)
    rows, sims = index.search(images, k, encoder=encoder)
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
        preset = index.embedder(encoder).preset
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
