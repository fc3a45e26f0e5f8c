"""Reports as pictures: probe accuracy against wall time, and grids of thumbnails.

`thumbnail_grid` is the one figure of images in rows (embed's neighbours, search's
results, inspection's findings); names are drawn as plain text (a `$` in a file or class
name is not matplotlib mathtext) and an image that could not be read back is an empty,
titled cell.

Used by amdim-compare (one curve per method) and amdim-plot-run (the
README curve of one run). Wall time is *active* time: a run that was stopped
and resumed later leaves a gap between two consecutive records, and a gap
longer than `MAX_GAP_SECONDS` (5 minutes) is removed, so the x axis is the sum
of the active segments. No healthy run goes 5 minutes without a record: one is
written every `train.log_every_steps` steps and after every epoch's eval.
Time before the first record (model build, tracing, the first
log_every_steps steps) is not on the axis.

Plots use matplotlib's Agg canvas through `Figure` directly (no pyplot, no
display, no global backend switch).
"""

import json

import numpy as np

from amdim_tf import durable

MAX_GAP_SECONDS = 300.0
EVAL_LINEAR_KEY = "probe/eval_linear_acc"  # online linear head, eval split, once per epoch
TRAIN_LINEAR_KEY = "probe/linear_acc"  # the same head on training batches (augmented views)
EVAL_KNN_KEY = "probe/eval_knn_acc"  # cosine kNN of r1 on an eval sample (train.knn_examples)


def read_metrics(path):
    """The records of a metrics.jsonl, in file order; a torn last line (killed writer) is skipped."""
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def active_seconds(times, max_gap=MAX_GAP_SECONDS):
    """Seconds since times[0] with every gap > max_gap between neighbours removed."""
    out, total = [], 0.0
    for i, t in enumerate(times):
        if i:
            gap = t - times[i - 1]
            # A gap above max_gap is a stopped run, not work: it counts as zero.
            # A negative gap (clock step) also counts as zero.
            total += gap if 0.0 < gap <= max_gap else 0.0
        out.append(total)
    return out


def curves_from_metrics(metrics_jsonl_path, key=EVAL_LINEAR_KEY, max_gap=MAX_GAP_SECONDS):
    """[(active seconds since the run's first record, value of `key`), ...] in file order.

    The clock runs over all records (not only those holding `key`), so a gap is
    recognised even when `key` is logged rarely (the eval probe once per epoch).
    Use key=TRAIN_LINEAR_KEY for the online probe on training batches.
    """
    records = [r for r in read_metrics(metrics_jsonl_path) if "time" in r]
    seconds = active_seconds([float(r["time"]) for r in records], max_gap)
    return [(s, float(r[key])) for s, r in zip(seconds, records, strict=True) if key in r]


def plot_probe_curves(series, path, title, ylabel="linear probe accuracy"):
    """Writes a PNG of accuracy (%) against wall time, one line per label.

    Args:
        series: {label: [(seconds_since_start, accuracy in [0, 1]), ...]}; an
            empty list still gets a legend entry, marked "(no points)".
        path: output .png.
        title: figure title.
    Returns:
        path.
    """
    from matplotlib.figure import Figure

    longest = max((t for points in series.values() for t, _ in points), default=0.0)
    minutes = longest > 180
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for label, points in series.items():
        if not points:
            ax.plot([], [], label=f"{label} (no points)")
            continue
        t = [s / 60 if minutes else s for s, _ in points]
        acc = [100 * a for _, a in points]
        # Markers keep a one-point curve (a short budget) visible.
        ax.plot(t, acc, marker="o", markersize=3, linewidth=1.5, label=label)
    ax.set_xlabel(f"wall time ({'minutes' if minutes else 'seconds'}, active)")
    ax.set_ylabel(f"{ylabel} (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return save_png(fig, path, dpi=110)


# The label-free monitors of run/health.py (keys under health/), as plot_health_curves
# draws them: (key, panel title).
HEALTH_PANELS = (
    ("health/rank_fraction", "effective rank / D (RankMe)"),
    ("health/alignment", "alignment (lower: views agree)"),
    ("health/uniformity", "uniformity (lower: spread out)"),
    ("health/dim_std", "mean per-dimension std"),
)


def plot_health_curves(metrics_jsonl_path, path, title):
    """Writes a PNG of the label-free health monitors against wall time, one panel each,
    with the online kNN accuracy of r1 (when logged) on a second axis of every panel, so
    one sees whether the monitors move with what labels would say. Returns `path`, or
    None when the run logged no health/ keys (train.health_examples = 0)."""
    from matplotlib.figure import Figure

    curves = {k: curves_from_metrics(metrics_jsonl_path, k) for k, _ in HEALTH_PANELS}
    if not any(curves.values()):
        return None
    knn = curves_from_metrics(metrics_jsonl_path, EVAL_KNN_KEY)
    longest = max((t for c in [*curves.values(), knn] for t, _ in c), default=0.0)
    scale, unit = (60, "minutes") if longest > 180 else (1, "seconds")
    fig = Figure(figsize=(9.0, 6.0), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, (key, label) in zip(axes, HEALTH_PANELS, strict=True):
        points = curves[key]
        ax.plot([t / scale for t, _ in points], [v for _, v in points], "o-", color="C0",
                markersize=3, label=key)  # fmt: skip
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        if knn:
            twin = ax.twinx()
            twin.plot([t / scale for t, _ in knn], [100 * v for _, v in knn], "s--",
                      color="C1", markersize=3, label="kNN acc of r1 (%)")  # fmt: skip
            twin.tick_params(labelsize=7, colors="C1")
    for ax in axes[2:]:
        ax.set_xlabel(f"wall time ({unit}, active)")
    fig.suptitle(
        f"{title}\nblue: health monitor (no labels); orange dashed: online kNN accuracy (%)",
        fontsize=10,
    )
    return save_png(fig, path, dpi=110)


def thumbnail_grid(path, cells, titles, header: str = "", frames=None, title_size: int = 6):
    """Writes a PNG of thumbnails in rows; returns path.

    Args:
        cells: rows of thumbnails, cells[r][c] uint8 [s, s, 3], or None for an image that
            could not be read (an empty cell marked "missing"); a row shorter than the
            longest leaves its end blank.
        titles: titles[r][c], plain text (never parsed as mathtext).
        header: the figure's title.
        frames: frames[r][c], a colour for the cell's frame, or None for none.
    """
    from matplotlib.figure import Figure

    n_rows = max(1, len(cells))
    n_cols = max([len(row) for row in cells] + [1])
    fig = Figure(figsize=(1.1 * n_cols, 1.25 * n_rows + 0.4), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, c in np.ndindex(n_rows, n_cols):
        ax = axes[r, c]
        ax.set_xticks([])
        ax.set_yticks([])
        if r >= len(cells) or c >= len(cells[r]):
            ax.axis("off")
            continue
        if cells[r][c] is None:
            ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=title_size,
                    color="gray", transform=ax.transAxes, parse_math=False)  # fmt: skip
        else:
            ax.imshow(cells[r][c], interpolation="nearest")
        ax.set_title(titles[r][c], fontsize=title_size, parse_math=False)
        colour = frames[r][c] if frames else None
        for spine in ax.spines.values() if colour else ():
            spine.set_edgecolor(colour)
            spine.set_linewidth(2)
    if header:
        fig.suptitle(header, fontsize=8, parse_math=False)
    return save_png(fig, path)


def save_png(fig, path: str, dpi: int = 100) -> str:
    """Writes a matplotlib figure as PNG at `path` atomically (`durable.atomic_path`), so a
    reader (or a kill) never meets half a file. Creates the directory; returns path."""
    with durable.atomic_path(path) as stage:
        fig.savefig(stage, dpi=dpi, format="png")
    return path
