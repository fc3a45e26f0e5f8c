"""Embed a folder (or any data source) with a trained encoder, and look at the result.

    embed(encoder_path, data, split, out_dir)

reads the images of `split` from any source the trainer reads (`data` is a config's
`data` section: an image folder (unlabelled, or classes with data.labels=folders), npz, TFRecord,
TFDS), encodes them with a trained encoder (anything `loader.open_encoder` opens: a work
directory, a SavedModel export of amdim-export, or a `.keras` file of
`loader.save_encoder`) in inference mode, and writes to `out_dir`:

    r1.npy            float32 [N, D] (and r5.npy / r7.npy, average-pooled, on request)
    index.tsv         header, then one line per row of the .npy: id (file path, or
                      split:position), label (empty when unlabelled), class name
    embed.json        what was embedded, with what (the encoder's description, path and
                      fingerprint, `loader.weights_fingerprint`), how long it took, what
                      was skipped, and the ids of the rows whose features are NaN or inf
                      (kept in the .npy files, left out of the pictures; search and
                      inspect skip them; all of them: refused)
    neighbours.png    seeded query images (left column) and their nearest by cosine
    projector_config.pbtxt, embedding.ckpt-1.*, metadata.tsv, sprite.png
                      the TensorBoard projector (`tensorboard --logdir OUT_DIR`, tab
                      PROJECTOR) on up to `projector_examples` rows: the tensor is named
                      after the feature (r1), points are labelled by class name (or
                      file name when unlabelled) and can be coloured by class

The whole output is staged in a hidden directory beside `out_dir` and renamed into place
when complete, so a kill or a full disk at any moment leaves the previous output whole
(or none) and never a mix; a previous output parked by a kill between the two renames is
put back by the next call. A full disk is a one-line error: every disk-backed array is
allocated on disk before it is mapped (a mapped write past a full disk is a SIGBUS).

Images go through the evaluation view of the encoder's preset (`augment.eval_view`: CIFAR
images as they are, STL/ImageNet resized and centre-cropped), exactly what the frozen
evaluation feeds the encoder. Memory does not grow with the number of images: features
and thumbnails go to disk-backed arrays (`np.lib.format.open_memmap`, sized by counting
first) batch by batch; only the projector sample and its sprite (at most 8192 px square)
are held whole. Unreadable images are skipped and counted as in training (the source's
up-front validation names the first few; `data.strict=True` fails instead).
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from amdim_tf import data as data_lib
from amdim_tf import durable
from amdim_tf.data import augment
from amdim_tf.data.pixel_scale import PIXEL_MAX, to_uint8
from amdim_tf.errors import UserError
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run import loader
from amdim_tf.run.features import check_feature_keys
from amdim_tf.run.neighbours import finite_rows, l2_normalise, topk_cosine
from amdim_tf.use import report

INDEX_FILE = "index.tsv"
NEIGHBOURS_FILE = "neighbours.png"
SUMMARY_FILE = "embed.json"
_SPRITE_MAX_SIDE = 8192  # the TensorBoard projector's limit on the sprite image
_THUMBS_FILE = ".thumbnails.npy"  # scratch, removed at the end
_LABELS_FILE = ".labels.npy"  # scratch, removed at the end
_PROJECTOR_CKPT = "embedding.ckpt-1"


# -- the image stream ------------------------------------------------------------------


@dataclasses.dataclass
class _Part:
    ds: tf.data.Dataset  # (id string, pixels float32 [S, S, 3] in [0, 1], label, thumb uint8)
    count: int
    class_names: tuple
    skipped: int
    skipped_names: list


def _part(source, part, preset, thumb):
    """One split part as a stream of (id, pixels, label, thumbnail).

    The opened source reads the part (for folders the payload is the file path, which
    becomes the id) and names what it skipped, exactly as training reads and skips it.
    """
    examples = source.examples(part)
    count = source.count(part)
    is_folder = isinstance(source, data_lib.FolderSource)
    class_names = source.class_names(part)
    skipped = source.skipped(part)

    def prepare(index, example):
        payload, label = example
        if is_folder:
            name = payload
        else:
            name = tf.strings.join([part, ":", tf.strings.as_string(index)])
        # The eval view, then back to [0, 1]: the pixels the encoder's preprocessing
        # (and the sprite) take; eval_view holds the preset's resize/centre-crop.
        pixels = augment.eval_pixels(examples.decode(payload), preset)
        small = tf.image.resize(pixels, [thumb, thumb], antialias=True)
        small = to_uint8(small)
        return name, pixels, label, small

    ds = examples.ds.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return _Part(ds, count, tuple(class_names), len(skipped), skipped[:5])


def _stream(source, split, preset, thumb):
    parts = [_part(source, p, preset, thumb) for p in data_lib.split_parts(split)]
    ds = parts[0].ds
    for extra in parts[1:]:
        ds = ds.concatenate(extra.ds)
    return ds, parts


def _source_for(data, image_size, preset, split):
    """(opened source, split) for the encoder's input size; a folder read with
    data.labels="none" is its split "unlabeled" (every image under data.path)."""
    data = data_lib.Data(data.to_dict())
    data.image_size = image_size
    data.augment = preset
    data.cache = False  # one pass: a cache would hold every decoded image
    source = data_lib.open_source(data)
    if isinstance(source, data_lib.FolderSource) and source.is_flat():
        source, split = source.flat_as_unlabeled(), data_lib.UNLABELED_SPLIT
    return source, split


# -- outputs ---------------------------------------------------------------------------


def _tsv(value):
    return str(value).replace("\t", "\\t").replace("\n", "\\n")


def _index_line(name, label, class_names):
    name = name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else str(name)
    label = int(label)
    if label < 0:
        return f"{_tsv(name)}\t\t"
    cls = class_names[label] if label < len(class_names) else ""
    return f"{_tsv(name)}\t{label}\t{_tsv(cls)}"


def nearest(features, query_rows, k, chunk=65536):
    """(rows [Q, k], cosine [Q, k]) of the k nearest rows to each query row, itself excluded.

    Reads `features` ([N, D], e.g. a memmap) in chunks, so N is not held in memory; rows
    of NaN or inf features are never neighbours (`neighbours.finite_rows`).
    """
    query_rows = np.asarray(query_rows)
    queries = l2_normalise(features[query_rows])  # [Q, D]
    best_rows = np.zeros((len(queries), 0), np.int64)
    best_sims = np.zeros((len(queries), 0), np.float32)
    for start in range(0, len(features), chunk):
        block = np.asarray(features[start : start + chunk])  # [C, D]
        usable = np.flatnonzero(finite_rows(block))  # [F]
        if not len(usable):
            continue
        # k + 1: a query's own row is among the nearest and is dropped below.
        rows, sims = topk_cosine(queries, l2_normalise(block[usable]), min(k + 1, len(usable)))
        all_sims = np.concatenate([best_sims, sims], axis=1)
        all_rows = np.concatenate([best_rows, start + usable[rows]], axis=1)
        keep = np.argsort(-all_sims, axis=1, kind="stable")[:, : k + 1]
        best_sims = np.take_along_axis(all_sims, keep, 1)
        best_rows = np.take_along_axis(all_rows, keep, 1)
    # Stable: the others keep their order; without its own row a query drops its k+1-th.
    keep = np.argsort(best_rows == query_rows[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(best_rows, keep, 1), np.take_along_axis(best_sims, keep, 1)


def _display_name(index_line):
    """What names a row for a person: its class name (or label), else its file stem."""
    name, label, cls = index_line.split("\t")
    return cls or label or os.path.splitext(os.path.basename(name))[0] or name


def _neighbour_figure(path, thumbs, labels, query_rows, rows, sims, key, titles):
    """The neighbour image: per query (left, titled by `titles`) its nearest, titled by
    cosine and framed green (same label), red (another) or gray (unlabelled)."""
    cells, names, frames = [], [], []
    for i, query in enumerate(query_rows):
        cells.append([thumbs[query]] + [thumbs[row] for row in rows[i]])
        names.append([titles[i][:18]] + [f"{sim:.3f}" for sim in sims[i]])
        colours = ["black"]
        for row in rows[i]:
            same = labels[row] >= 0 and labels[row] == labels[query]
            differ = labels[row] >= 0 and labels[query] >= 0 and not same
            colours.append("green" if same else "red" if differ else "gray")
        frames.append(colours)
    header = (
        f"{rows.shape[1]} nearest by cosine of {key} (title: similarity; frame green = same label)"
    )
    return report.thumbnail_grid(path, cells, names, header, frames, title_size=7)


def _metadata_line(index_line, labelled):
    """A metadata.tsv row: the projector labels points by the first column, so that is
    the class name when the data are labelled, else the file stem."""
    name, label, cls = index_line.split("\t")
    if labelled:
        return f"{_display_name(index_line)}\t{label}\t{name}"
    return f"{_display_name(index_line)}\t{name}"


def _write_projector(out_dir, features, rows, thumbs, index_lines, key, labelled):
    from tensorboard.plugins import projector

    n = len(rows)
    side = int(np.ceil(np.sqrt(n)))
    thumb = thumbs.shape[1]
    tile = min(thumb, _SPRITE_MAX_SIDE // side)
    sprite = np.full((side * tile, side * tile, 3), 255, np.uint8)
    for start in range(0, n, 4096):
        chunk = np.asarray(thumbs[rows[start : start + 4096]])
        if tile != thumb:
            chunk = tf.image.resize(chunk, [tile, tile], antialias=True)
            chunk = to_uint8(chunk, peak=PIXEL_MAX).numpy()
        for i, image in enumerate(chunk, start):
            r, c = divmod(i, side)
            sprite[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = image
    tf.io.write_file(os.path.join(out_dir, "sprite.png"), tf.io.encode_png(sprite))
    with open(os.path.join(out_dir, "metadata.tsv"), "w") as f:
        f.write("class\tlabel\tid\n" if labelled else "name\tid\n")
        for row in rows:
            f.write(_metadata_line(index_lines[row], labelled) + "\n")
    # The tensor is saved under the feature's own name (r1), which the projector shows;
    # a tf.train.Checkpoint would name it "<attribute>/.ATTRIBUTES/VARIABLE_VALUE".
    tf.raw_ops.SaveV2(
        prefix=os.path.join(out_dir, _PROJECTOR_CKPT),
        tensor_names=[key],
        shape_and_slices=[""],
        tensors=[tf.constant(np.asarray(features[rows]))],
    )
    with open(os.path.join(out_dir, "checkpoint"), "w") as f:  # where the projector looks
        f.write(
            f'model_checkpoint_path: "{_PROJECTOR_CKPT}"\n'
            f'all_model_checkpoint_paths: "{_PROJECTOR_CKPT}"\n'
        )
    config = projector.ProjectorConfig()
    item = config.embeddings.add()
    item.tensor_name = key
    item.metadata_path = "metadata.tsv"
    item.sprite.image_path = "sprite.png"
    item.sprite.single_image_dim.extend([tile, tile])
    projector.visualize_embeddings(out_dir, config)


def embed(
    encoder_path,
    data,
    split,
    out_dir,
    features=(GLOBAL,),
    which="latest",
    batch_size=256,
    neighbours=8,
    queries=8,
    projector_examples=10000,
    thumb_size=32,
    seed=0,
    verbose=1,
):
    """Embeds every image of `split` and writes features, index, projector and neighbours.

    Args:
        encoder_path: a work directory, a SavedModel export (or its base directory), or
            a `.keras` file written by `loader.save_encoder`.
        data: a config's `data` section (source, path, ...); its image size and
            preset are set to the encoder's. A folder source with data.labels="none"
            (the default) is read as unlabelled images, sub-folders included.
        split: e.g. "test", "train", "train+unlabeled", "unlabeled".
        out_dir: where to write (created; existing outputs are replaced).
        features: keys among ("r1", "r5", "r7"), one .npy each; the first one feeds
            the projector and the neighbours.
        which: "latest" or "best" checkpoint of a work directory.
        neighbours / queries: the neighbour image has `queries` rows of the
            `neighbours` nearest (0 = no image).
        projector_examples: rows shown in the projector (a seeded sample if fewer than
            the images; 0 = no projector).
        thumb_size: side of the thumbnails of the sprite and the neighbour image.
        seed: picks the queries and the projector sample.
        verbose: 1 shows a progress bar.

    Returns:
        the summary dict also written to out_dir/embed.json.
    """
    features = tuple(features)
    loading = time.perf_counter()
    output = durable.OutputDir(out_dir, SUMMARY_FILE, "an embedding")  # refused before the work
    model = loader.open_encoder(encoder_path, which)
    check_feature_keys(features, model.feature_names, f"the encoder at {encoder_path}")
    start = time.perf_counter()
    source, split = _source_for(data, model.image_size, model.preset, split)
    data = source.data
    thumb = min(int(thumb_size), model.image_size)
    ds, parts = _stream(source, split, model.preset, thumb)
    total = sum(p.count for p in parts)
    if total == 0:
        raise UserError(f"split {split!r} of data.source={data.source!r} holds no images.")
    class_names = parts[0].class_names
    with output.staged() as stage:
        summary = _write_outputs(
            start,
            stage, model, ds, parts, total, class_names, features, batch_size, thumb,
            neighbours, queries, projector_examples, seed, verbose,
        )  # fmt: skip
        embed_seconds = summary.pop("embed_seconds")
        non_finite = summary.pop("non_finite")
        if non_finite:
            logging.warning(
                "%d of the %d images have NaN or inf features (first: %s); their rows are "
                "kept in the .npy files and listed in %s, and search and inspect skip them.",
                len(non_finite), total, ", ".join(non_finite[:5]), SUMMARY_FILE,
            )  # fmt: skip
        summary = {
            "encoder": model.description,
            # Only named, never opened from here: search takes the encoder from its user,
            # and this path tells the user which one the index was built with.
            "encoder_path": os.path.abspath(os.fspath(encoder_path)),
            # What search and inspect compare to know an encoder is this one.
            "encoder_fingerprint": model.fingerprint,
            "which": which,
            "preset": model.preset,
            "image_size": model.image_size,
            "data": {k: data[k] for k in ("source", "name", "path", "unlabeled_path")},
            "split": split,
            "images": total,
            "skipped_unreadable": sum(p.skipped for p in parts),
            "skipped_first": [n for p in parts for n in p.skipped_names][:5],
            # Rows whose features hold NaN or inf (a broken encoder): kept in the .npy
            # files, aligned with index.tsv, each named here by its id.
            "non_finite_rows": len(non_finite),
            "non_finite_ids": non_finite,
            "features": summary["features"],
            # Reading, validating, decoding, encoding and writing the features; loading the
            # encoder and the projector / neighbour outputs are in total_seconds.
            "embed_seconds": round(embed_seconds, 2),
            "images_per_second": round(total / embed_seconds, 1),
            "total_seconds": round(time.perf_counter() - loading, 2),
            "outputs": summary["outputs"],
        }
        with open(os.path.join(stage, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=1)  # the manifest, last
    return summary


def _allocated(path, dtype, shape):
    """`np.lib.format.open_memmap` for writing, with its blocks allocated on disk first:
    a full disk is then an OSError here instead of a SIGBUS at a later write."""
    array = np.lib.format.open_memmap(path, "w+", dtype, shape)
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return array


def _write_outputs(
    start,
    out_dir, model, ds, parts, total, class_names, features, batch_size, thumb,
    neighbours, queries, projector_examples, seed, verbose,
):  # fmt: skip
    """Writes the features, index, neighbours and projector into `out_dir` (the stage);
    `start` is when reading the data began."""
    probe = model.pooled_unit_views(tf.zeros([1, model.image_size, model.image_size, 3]), features)
    arrays = {
        k: _allocated(
            os.path.join(out_dir, f"{k}.npy"), np.float32, (total, int(probe[k].shape[-1]))
        )
        for k in features
    }
    thumbs_path = os.path.join(out_dir, _THUMBS_FILE)
    thumbs = _allocated(thumbs_path, np.uint8, (total, thumb, thumb, 3))
    labels = _allocated(os.path.join(out_dir, _LABELS_FILE), np.int32, (total,))
    index_lines = []  # one short string per image; the only per-image memory held
    non_finite = []  # rows whose features hold NaN or inf (a broken encoder)
    bar = keras.utils.Progbar(total, verbose=verbose, unit_name="image")
    row = 0
    with open(os.path.join(out_dir, INDEX_FILE), "w") as index:
        index.write("id\tlabel\tclass\n")
        batches = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        for names, pixels, batch_labels, small in batches.as_numpy_iterator():
            out = model.pooled_unit_views(pixels, features)
            end = row + len(names)
            if end > total:
                raise RuntimeError(f"the data yielded more than the {total} images counted.")
            finite = np.ones(len(names), bool)
            for k in features:
                arrays[k][row:end] = out[k].numpy()
                finite &= finite_rows(arrays[k][row:end])
            non_finite.extend(row + np.flatnonzero(~finite))
            thumbs[row:end] = small
            labels[row:end] = batch_labels
            for name, label in zip(names, batch_labels, strict=True):
                line = _index_line(name, label, class_names)
                index.write(line + "\n")
                index_lines.append(line)
            row = end
            bar.update(row)
    embed_seconds = time.perf_counter() - start
    for k in features:
        arrays[k].flush()
    if row != total:
        raise RuntimeError(f"counted {total} images but read {row}; was the data changed?")
    if len(non_finite) == total:
        raise UserError(
            f"every one of the {total} images has NaN or inf features from {model.description}"
            " (a diverged run?); embed with an earlier checkpoint (--which=best) or retrain."
        )
    # Marked, not dropped: the rows stay aligned with index.tsv, search and inspect skip
    # them (`neighbours.finite_rows`), and the pictures below show only finite rows.
    finite = np.setdiff1d(np.arange(total), non_finite)

    rng = np.random.default_rng(seed)
    key = features[0]
    outputs = [f"{k}.npy" for k in features] + [INDEX_FILE]
    if neighbours and queries:
        query_rows = np.sort(rng.choice(finite, min(queries, len(finite)), replace=False))
        k = min(neighbours, len(finite) - 1)
        if k > 0:
            rows, sims = nearest(arrays[key], query_rows, k)
            titles = [_display_name(index_lines[r]) for r in query_rows]
            _neighbour_figure(
                os.path.join(out_dir, NEIGHBOURS_FILE), thumbs, labels, query_rows, rows, sims,
                key, titles,
            )  # fmt: skip
            outputs.append(NEIGHBOURS_FILE)
    if projector_examples:
        rows = finite
        if len(finite) > projector_examples:
            rows = np.sort(rng.choice(finite, projector_examples, replace=False))
        labelled = bool(np.any(np.asarray(labels) >= 0))
        _write_projector(out_dir, arrays[key], rows, thumbs, index_lines, key, labelled)
        outputs += ["projector_config.pbtxt", "metadata.tsv", "sprite.png", "embedding.ckpt-1"]
    shapes = {k: list(arrays[k].shape) for k in features}
    del thumbs, labels, arrays
    os.remove(thumbs_path)
    os.remove(os.path.join(out_dir, _LABELS_FILE))
    return {
        "features": shapes,
        "outputs": outputs,
        "embed_seconds": embed_seconds,
        "non_finite": [index_lines[r].split("\t")[0] for r in non_finite],
    }
