"""What is in my data: near-duplicates, train/test leakage, outliers and likely mislabels.

    summary = inspect_embeddings(["emb_train", "emb_test"], "inspection")

reads one or two outputs of `embed` (the first is the reference split, e.g. train; the
second the one checked against it, e.g. test), both from the same encoder, and finds:

- **near-duplicate pairs** within each split, and across the two (a test image whose
  nearest training image is a near-duplicate: leakage, as Barz & Denzler 2020, "Do we
  train on test data? Purging CIFAR of near-duplicates", found for 3.3% of CIFAR-10's test
  set);
- **outliers**: the images of lowest kNN density (mean cosine to their k nearest in their
  split);
- **likely mislabels** (labelled data only; unlabelled data is skipped and the report says
  so): images whose k nearest (in the reference split) agree on another label with at
  least `agreement` of the votes (the kNN-disagreement rule of e.g. cleanlab's kNN
  variant; Northcutt et al. 2021 found such errors in CIFAR-10's test set too).

The duplicate threshold. Unless given, it is read from the data. Take every image's
cosine *distance* to its nearest neighbour (1 - cosine; within each split and, for the
second split, to the first). For ordinary images these distances form one bulk, roughly
log-normal; exact pixel duplicates sit at distance ~0 (1e-7, float rounding) and re-encoded,
resized or slightly cropped copies a few orders of magnitude below the bulk, because the
encoder was trained to map augmented views of one image together. So the threshold is
the distance `_ROBUST_Z` robust standard deviations (1.4826 x the median absolute deviation)
below the median of log distance: a pair closer than that is far outside what
neighbouring distinct images do. The report states the median, the spread, the chosen
threshold as a cosine, and how many exact (distance < 1e-5) pairs there are; pass
`threshold=` (a cosine) to override.

Rows of NaN or inf features have no cosine: they are skipped, counted in the report, and
enter no statistic. A group of near-duplicates larger than k is counted whole: an image
whose k-th neighbour is still a near-duplicate has its neighbours widened until one is not
(`neighbours.neighbours_above`), so pairs.csv holds every pair.

Computation is blocked (`neighbours.topk_cosine`: [block, N] similarities at a time, never
N x N): for N = 60,000 it holds the features (N x D floats) and a 128 MB block. Outputs
(each staged to a temporary name and renamed into place): report.md, report.json,
pairs.csv (every near-duplicate pair), outliers.csv, mislabels.csv, and PNG grids of the
top findings (duplicates.png, leakage.png, outliers.png, mislabels.png) titled with ids.
"""

import os
import time

import numpy as np

from amdim_tf import durable
from amdim_tf.errors import UserError
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run import neighbours
from amdim_tf.use import inspect_report, search
from amdim_tf.use.inspect_report import EXACT_DISTANCE

_ROBUST_Z = 3.0  # robust standard deviations of log distance below the median: duplicates
_MAD_TO_STD = 1.4826  # median absolute deviation -> standard deviation of a normal
_MAX_GROUP = 1000  # near-duplicates listed per image: bounds pairs.csv at a low threshold


def duplicate_threshold(nearest_cosines, z: float = _ROBUST_Z) -> dict:
    """The data-driven near-duplicate cosine threshold (rule in the module docstring).

    Args:
        nearest_cosines: float [M], each image's cosine to its nearest neighbour.
        z: robust standard deviations below the median log distance.

    Returns:
        {"cosine": threshold, "median_distance", "log_spread", "z"}.
    """
    d = np.maximum(1.0 - np.asarray(nearest_cosines, np.float64), 1e-7)  # [M]
    log_d = np.log(d)
    # Exact duplicates are the tail being found; they must not drag the bulk's statistics.
    bulk = log_d[d > EXACT_DISTANCE]
    if len(bulk) == 0:
        bulk = log_d
    median = float(np.median(bulk))
    spread = float(_MAD_TO_STD * np.median(np.abs(bulk - median)))
    # Never below the exact level: pixel-identical pairs are duplicates whatever the bulk.
    distance = max(float(np.exp(median - z * spread)), EXACT_DISTANCE)
    return {
        "cosine": 1.0 - distance,
        "median_distance": float(np.exp(median)),
        "log_spread": spread,
        "z": float(z),
    }


def _pairs_within(i, j, cos):
    """Unique (i, j, cosine), i < j, of (query, neighbour, cosine) triples, closest first."""
    a, b = np.minimum(i, j), np.maximum(i, j)
    _, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
    order = np.argsort(-cos[first], kind="stable")
    return [(int(a[f]), int(b[f]), float(cos[f])) for f in first[order]]


def _pairs_across(i, j, cos):
    """(query row, reference row, cosine) triples, closest first."""
    order = np.argsort(-cos, kind="stable")
    return [(int(i[o]), int(j[o]), float(cos[o])) for o in order]


def knn_disagreement(neighbour_labels, labels, num_classes: int, agreement: float):
    """(flagged rows, predicted label, vote share) of images whose neighbours agree on
    another label with at least `agreement` of the votes.

    neighbour_labels: int [M, k] (-1 = unlabelled neighbour, no vote); labels: int [M].
    """
    k = neighbour_labels.shape[1]
    votes = neighbours.knn_votes(neighbour_labels, num_classes)  # [M, C]
    predicted = votes.argmax(1)  # [M]
    share = votes.max(1) / k  # [M]
    flagged = np.nonzero((labels >= 0) & (predicted != labels) & (share >= agreement))[0]
    flagged = flagged[np.argsort(-share[flagged], kind="stable")]
    return flagged, predicted, share


def labels_by_name(ix, ref) -> np.ndarray:
    """int [len(ix)]: `ix`'s labels numbered as `ref` numbers the same class names (-1 for
    unlabelled rows and for a class `ref` lacks). Votes come from `ref`, so labels are
    compared by name, never by number: two splits numbered on their own (train {blue,
    green, red}, test {blue, red}) would make every red test image "red -> 2"."""
    # A class without a name (an npz without class_names) is known by its number.
    index = {n or str(i): i for i, n in enumerate(ref.class_names)}
    table = [index.get(n or str(i), -1) for i, n in enumerate(ix.class_names)]
    table = np.array(table + [-1], np.int64)
    return np.where(ix.labels >= 0, table[ix.labels], -1)


def inspect_embeddings(
    embed_dirs,
    out_dir,
    threshold: float | None = None,
    k: int = 10,
    agreement: float = 0.8,
    top: int = 24,
    thumb: int = 32,
    key: str = GLOBAL,
    verbose: bool = True,
) -> dict:
    """Inspects one or two embed outputs and writes the report (module docstring).

    Args:
        embed_dirs: one embed output directory, or two (reference, e.g. train; then the
            split checked against it, e.g. test), from the same encoder.
        out_dir: where the report goes (created; a previous report there is replaced whole).
        threshold: near-duplicate cosine; None = from the data (`duplicate_threshold`).
        k: neighbours for density and label votes.
        agreement: share of the k votes another label needs to flag a mislabel.
        top: findings per grid (0 = no grids; grids read images back from the source).
        thumb: thumbnail side in the grids.
        key: the feature file (r1).
        verbose: print progress lines.

    Returns:
        the summary also written to out_dir/report.json.
    """
    if isinstance(embed_dirs, (str, os.PathLike)):
        embed_dirs = [embed_dirs]
    if not 1 <= len(embed_dirs) <= 2:
        raise UserError(f"embed_dirs={embed_dirs!r}: give one embed output or two.")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise UserError(f"threshold={threshold!r} is a cosine; give a value in [-1, 1].")
    output = durable.OutputDir(out_dir, "report.json", "an inspection report")
    start = time.perf_counter()

    def say(msg):
        if verbose:
            print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    indexes, names, kept, feats = _open_indexes(embed_dirs, key, k)
    for ix, name in zip(indexes, names, strict=True):
        if ix.skipped_nonfinite:
            say(f"{name}: {ix.skipped_nonfinite} rows of NaN or inf features skipped")
    within = []
    for x, name in zip(feats, names, strict=True):
        within.append(neighbours.topk_cosine(x, x, k, self_offset=0))
        say(f"{k} nearest within {name} ({len(x):,} images)")
    across = None
    if len(indexes) == 2:
        across = neighbours.topk_cosine(feats[1], feats[0], k)
        say(f"{k} nearest in {names[0]} of each {names[1]} image")

    nearest = [s[:, 0] for _, s in within] + ([across[1][:, 0]] if across else [])
    rule = duplicate_threshold(np.concatenate(nearest))
    chosen = float(threshold) if threshold is not None else rule["cosine"]
    pairs, leaked, capped = _near_duplicates(feats, kept, within, across, names, chosen)
    label_note = [
        f"{name}: {ix.skipped_nonfinite} rows of NaN or inf features skipped (in no statistic)"
        for ix, name in zip(indexes, names, strict=True)
        if ix.skipped_nonfinite
    ]
    if capped:
        label_note.append(
            f"{capped} images have more than {_MAX_GROUP} near-duplicates at this threshold; "
            f"pairs.csv lists their {_MAX_GROUP} closest only"
        )
    outliers = []
    for rows, (_, sims), name in zip(kept, within, names, strict=True):
        density = sims.mean(1)  # [F]
        for at in np.argsort(density, kind="stable")[: max(top, 100)]:
            outliers.append((name, int(rows[at]), float(density[at])))
    mislabels = _mislabels(indexes, names, kept, within, across, agreement, label_note)
    say("pairs, outliers and label votes")
    findings = {"pairs": pairs, "outliers": outliers, "mislabels": mislabels, "leaked": leaked}
    findings["exact"] = sum(1 for p in pairs if 1.0 - p[5] < EXACT_DISTANCE)
    settings = {"key": key, "k": k, "agreement": agreement, "top": top, "thumb": thumb}
    threshold_info = {
        "cosine": chosen,
        "chosen": "given" if threshold is not None else "from the data",
        "rule": rule,
    }
    # Written whole into a stage and renamed into place, report.json last: a kill leaves
    # the previous report or this one.
    with output.staged() as stage:
        return inspect_report.write_report(
            stage, indexes, names, findings, settings, threshold_info, label_note, say, start
        )


def _open_indexes(embed_dirs, key, k) -> tuple:
    """(indexes, split names, kept rows, their features) of one or two embed outputs of
    the same encoder, each with at least k + 1 images of finite features."""
    indexes = [search.Index.load(d, key) for d in embed_dirs]
    if len(indexes) == 2:
        a, b = indexes
        if a.dim != b.dim or not search.same_encoder(a, b):
            raise UserError(
                f"{a.directory} ({a.summary.get('encoder')}, {key} size {a.dim}) and "
                f"{b.directory} ({b.summary.get('encoder')}, size {b.dim}) come from "
                "different encoders; embed both splits with the same one."
            )
    names = [str(ix.summary.get("split", f"split{i}")) for i, ix in enumerate(indexes)]
    if len(names) == 2 and names[0] == names[1]:
        names = [f"{names[0]}(a)", f"{names[1]}(b)"]
    # Rows of NaN or inf features have no cosine: every statistic below skips them, and
    # `kept[s][i]` maps position i of split s's finite rows back to its row in the index.
    kept = [ix.finite_rows() for ix in indexes]
    # A copy only when some rows are dropped: 60,000 x 512 floats are 123 MB.
    feats = [
        ix.features if len(rows) == len(ix) else ix.features[rows]
        for ix, rows in zip(indexes, kept, strict=True)
    ]
    for rows, name in zip(kept, names, strict=True):
        if len(rows) < k + 1:
            raise UserError(
                f"{name} holds {len(rows)} images with finite features; k={k} needs at "
                f"least {k + 1}."
            )
    return indexes, names, kept, feats


def _near_duplicates(feats, kept, within, across, names, chosen) -> tuple:
    """(pairs [(kind, split_a, row_a, split_b, row_b, cosine)], leaked rows of the second
    split, images whose near-duplicates were capped at _MAX_GROUP)."""
    pairs = []
    capped = 0  # images with more near-duplicates than _MAX_GROUP (a very low threshold)
    for x, rows, (near, sims), name in zip(feats, kept, within, names, strict=True):
        i, j, c, cut = neighbours.neighbours_above(
            x, x, chosen, near, sims, np.arange(len(x)), _MAX_GROUP
        )
        capped += cut
        pairs += [
            ("within", name, a, name, b, cos) for a, b, cos in _pairs_within(rows[i], rows[j], c)
        ]
    leaked = []
    if across:
        i, j, c, cut = neighbours.neighbours_above(
            feats[1], feats[0], chosen, *across, max_k=_MAX_GROUP
        )
        capped += cut
        found = _pairs_across(kept[1][i], kept[0][j], c)
        pairs += [("across", names[1], i, names[0], j, c) for i, j, c in found]
        leaked = sorted({i for i, _, _ in found})
    return pairs, leaked, capped


def _mislabels(indexes, names, kept, within, across, agreement, label_note) -> list:
    """[(split, row, label, knn_label, vote_share)] of images whose neighbours in the
    reference split vote for another label; notes why a split was skipped."""
    mislabels = []
    for s, (ix, name) in enumerate(zip(indexes, names, strict=True)):
        # Votes come from the reference split (the first): for the second split its
        # nearest reference images, as a kNN classifier trained on it would vote.
        ref = indexes[0]
        near = within[0][0] if s == 0 else across[0]  # positions among kept[0]
        if not ix.labelled or not ref.labelled:
            label_note.append(f"{name}: unlabelled, mislabel check skipped")
            continue
        labels = labels_by_name(ix, ref)  # [N]: ref's numbering, -1 for a class it lacks
        unknown = int(np.sum((ix.labels >= 0) & (labels < 0)))
        if unknown:
            label_note.append(
                f"{name}: {unknown} images of classes {names[0]} lacks, mislabel check skipped"
            )
        num_classes = int(max(ref.labels.max(), labels.max())) + 1
        flagged, predicted, share = knn_disagreement(
            ref.labels[kept[0][near]], labels[kept[s]], num_classes, agreement
        )
        for at in flagged:
            row = kept[s][at]
            mislabels.append(
                (name, int(row), int(labels[row]), int(predicted[at]), float(share[at]))
            )
    return mislabels
