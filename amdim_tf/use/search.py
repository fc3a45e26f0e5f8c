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

Search is exact (cosine = dot product of normalised rows) and blocked: `topk_cosine`
scores a block of queries against all N rows ([block, N] floats, at most
`_BLOCK_FLOATS`), keeps the k best per row with `tf.math.top_k` (a heap, ~10x faster than
`np.argpartition` here), and never forms an N x N matrix. One query against 60,000 rows of
512 floats is a 123 MB matrix-vector product: a few milliseconds, so no approximate index
(ScaNN, faiss, usearch) is used; BUILD.md gives the measured time and its command.

`grid_png` draws queries and neighbours; `Index.thumbnails` reads the indexed images back
from the source embed.json names (files for a folder, `split:position` for npz, TFRecord,
TFDS, digits), so an index needs no stored copy of the pixels.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from amdim_tf import config_lib
from amdim_tf import data as data_lib
from amdim_tf.data import augment, decode
from amdim_tf.data.sources import folder as folder_lib
from amdim_tf.errors import UserError
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run import loader
from amdim_tf.use import embed, report

INDEX_FILE = embed.INDEX_FILE
SUMMARY_FILE = embed.SUMMARY_FILE
_BLOCK_FLOATS = 2**25  # similarity floats per block (128 MB)


def normalise(x) -> np.ndarray:
    """Rows of `x` scaled to unit length (float32), so dot products are cosines."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@tf.function(reduce_retracing=True)
def _block_topk(queries, refs, k):
    sims = tf.matmul(queries, refs, transpose_b=True)  # [B, N]
    return tf.math.top_k(sims, k)  # values [B, k], indices [B, k]


def topk_cosine(queries, refs, k: int, self_offset: int | None = None, block: int = 0):
    """(rows int64 [Q, k], cosines float32 [Q, k]) of the k nearest `refs` rows per query.

    Args:
        queries: float32 [Q, D], rows L2-normalised.
        refs: float32 [N, D] (array or tensor), rows L2-normalised (held whole; only
            [block, N] is scored at a time).
        k: neighbours per query (at most N, or N - 1 with `self_offset`).
        self_offset: the queries are refs[self_offset : self_offset + Q]: each query's own
            row is left out (by row, not by value, so an exact duplicate still counts).
        block: queries scored per step (0 = as many as fit `_BLOCK_FLOATS`).

    Sorted by decreasing cosine; ties keep the lower row first (`tf.math.top_k`).
    """
    queries = np.asarray(queries, np.float32)
    # A tensor is used as it is: an index converts its features once, not per query.
    refs_t = refs if tf.is_tensor(refs) else tf.constant(np.asarray(refs, np.float32))
    n = int(refs_t.shape[0])
    extra = 0 if self_offset is None else 1
    if not 0 < k <= n - extra:
        raise UserError(f"k={k} neighbours asked of {n} rows; use 1 <= k <= {n - extra}.")
    block = block or max(1, min(4096, _BLOCK_FLOATS // max(n, 1)))
    rows = np.zeros((len(queries), k), np.int64)
    sims = np.zeros((len(queries), k), np.float32)
    for start in range(0, len(queries), block):
        q = queries[start : start + block]  # [B, D]
        values, indices = _block_topk(tf.constant(q), refs_t, tf.constant(k + extra))
        values, indices = values.numpy(), indices.numpy().astype(np.int64)  # [B, k(+1)]
        if extra:
            own = self_offset + start + np.arange(len(q))  # [B]
            is_self = indices == own[:, None]  # [B, k+1]
            # Stable: non-self entries keep their order; a row without its own index
            # among the k+1 (ties at the boundary) drops its last, k+1-th entry.
            keep = np.argsort(is_self, axis=1, kind="stable")[:, :k]  # [B, k]
            values = np.take_along_axis(values, keep, 1)
            indices = np.take_along_axis(indices, keep, 1)
        rows[start : start + len(q)] = indices
        sims[start : start + len(q)] = values
    return rows, sims


def _read_index_tsv(path):
    ids, labels, names = [], [], []
    with open(path, encoding="utf-8", errors="backslashreplace") as f:
        header = f.readline().rstrip("\n")
        if header != "id\tlabel\tclass":
            raise UserError(
                f"{path} starts with {header!r}, not 'id\\tlabel\\tclass'; "
                "it is not an index.tsv written by amdim-embed."
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
    _refs: object = None  # the features as a tensor, made at the first search

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
                    f"(write one with amdim-embed --out={directory})."
                )
        with open(os.path.join(directory, SUMMARY_FILE)) as f:
            summary = json.load(f)
        raw = np.load(npy, mmap_mode="r")
        ids, labels, names = _read_index_tsv(tsv)
        if raw.ndim != 2 or raw.shape[0] != len(ids):
            raise UserError(
                f"{npy} holds {raw.shape[0] if raw.ndim else 0} rows but {tsv} lists "
                f"{len(ids)} images: a truncated or mixed embedding; embed again with "
                "amdim-embed."
            )
        recorded = summary.get("features", {}).get(key)
        if recorded is not None and list(recorded) != list(raw.shape):
            raise UserError(
                f"{npy} has shape {list(raw.shape)} but {SUMMARY_FILE} records {recorded}: "
                "files of two embeddings; embed again with amdim-embed."
            )
        features = np.empty(raw.shape, np.float32)
        for start in range(0, len(raw), 65536):  # the memmap read in bounded pieces
            features[start : start + 65536] = normalise(raw[start : start + 65536])
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
            raise UserError(
                f"{self.directory}/{SUMMARY_FILE} does not record the encoder's path (an "
                "older embed); pass encoder=PATH (--encoder) or query with features."
            )
        model = loader.open_encoder(path, self.summary.get("which", "latest"))
        zeros = tf.zeros([1, model.image_size, model.image_size, 3])
        probe = model.pooled(zeros, (self.key,))
        dim = int(probe[self.key].shape[-1])
        if dim != self.dim:
            raise UserError(
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
                model.pooled(pixels[i : i + 256], (self.key,))[self.key].numpy()
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
                raise UserError(
                    f"query features have size {features.shape[1]} but the index "
                    f"{self.directory} holds {self.key} of size {self.dim}; embed the "
                    "queries with the index's encoder."
                )
        if self._refs is None:
            self._refs = tf.constant(self.features)
        return topk_cosine(normalise(features), self._refs, min(int(k), len(self)))

    def thumbnails(self, rows, size: int = 48) -> np.ndarray:
        """uint8 [len(rows), size, size, 3]: the indexed images, read back from their source."""
        rows = [int(r) for r in rows]
        out = np.zeros((len(rows), size, size, 3), np.uint8)
        preset = self.summary.get("preset") or augment.preset_for("", 32)
        by_part = {}
        for i, row in enumerate(rows):
            name = str(self.ids[row])
            part, sep, pos = name.rpartition(":")
            if sep and pos.isdigit() and not os.path.exists(name):
                by_part.setdefault(part, []).append((int(pos), i))
            else:
                out[i] = _thumb(decode.decode_file(tf.constant(name)), preset, size)
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
        return out

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
    return tf.cast(tf.round(tf.clip_by_value(small, 0.0, 1.0) * 255.0), tf.uint8).numpy()


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
            raise UserError(
                f"cannot decode query image {name} ({reason}); remove or replace it."
            ) from None
    return names, images


def grid_png(path, query_thumbs, rows_thumbs, titles, row_labels=None, header="") -> str:
    """A PNG of one row per query: the query (left) then its neighbours, each titled.

    query_thumbs: uint8 [Q, s, s, 3]; rows_thumbs: uint8 [Q, k, s, s, 3];
    titles: [Q][k] strings. Staged to a temporary name and renamed into place.
    """
    from matplotlib.figure import Figure

    q, k = len(rows_thumbs), len(rows_thumbs[0]) if len(rows_thumbs) else 0
    fig = Figure(figsize=(1.1 * (k + 1), 1.25 * max(q, 1) + 0.4), layout="constrained")
    axes = fig.subplots(max(q, 1), k + 1, squeeze=False)
    for i in range(q):
        for j in range(k + 1):
            ax = axes[i, j]
            ax.imshow(query_thumbs[i] if j == 0 else rows_thumbs[i][j - 1], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            label = (row_labels[i] if row_labels else "query") if j == 0 else titles[i][j - 1]
            ax.set_title(label, fontsize=6)
    if header:
        fig.suptitle(header, fontsize=8)
    return report.save_png(fig, path)


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
        found = index.thumbnails(rows.reshape(-1), thumb).reshape(len(rows), -1, thumb, thumb, 3)
        titles = [[f"{v:.3f}" for v in s] for s in sims]
        grid_png(
            out_png,
            queries,
            found,
            titles,
            [os.path.basename(n)[:14] for n in names],
            f"{rows.shape[1]} nearest of {len(index):,} by cosine of {index.key}",
        )
    return results
