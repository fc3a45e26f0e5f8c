"""Where the global feature finds the other view: NCE score maps and mixture assignments.

Bachman, Hjelm & Buchwalter (2019) §3.7 show that with mixture-based
representations each component of r1 takes over a part of the image, a
segmentation that nobody taught. This module computes and draws, for a
`SelfSupervisedModel` and a few images:

(a) `assignment_figure`: for every r7 location of an image, the component that q
    assigns it to (argmax_j q_j), as a coloured overlay; the 7x7 grid is stretched
    over the image (each r7 location's receptive field is a patch of the input).
    Both views are the clean evaluation view of the image, so it reads as a
    segmentation of that image (n_mix > 0 only);
(b) `score_figure`: two augmented views (`augment.two_views`) beside heat maps of
    the per-location NCE score of view 1's r1 against view 2's r7 and r5 locations
    (the mixture objective per location when n_mix > 0).

Scores are log-softmax values whose negatives are the *other images drawn*, so they
depend on the set of images shown (at least 2; 8-16 make a fair batch).
`VisualizeCallback` logs the same two figures to TensorBoard every
`config.train.visualize_every_steps` steps during training, which is why they live in
run/; `use/visualize.py` writes them as PNG files for a trained run. Figures use
matplotlib's Agg canvas through `Figure` directly.
"""

import keras
import numpy as np
import tensorflow as tf

from amdim_tf.data import augment
from amdim_tf.errors import UserError

# A qualitative palette (matplotlib's tab10): component j is always this colour.
_PALETTE = np.array(
    [
        (0.122, 0.467, 0.706),
        (1.000, 0.498, 0.055),
        (0.173, 0.627, 0.173),
        (0.839, 0.153, 0.157),
        (0.580, 0.404, 0.741),
        (0.549, 0.337, 0.294),
        (0.890, 0.467, 0.761),
        (0.498, 0.498, 0.498),
        (0.737, 0.741, 0.133),
        (0.090, 0.745, 0.812),
    ]
)


def component_colours(k):
    """[k, 3] RGB in [0, 1], one per mixture component (cycling after 10)."""
    return _PALETTE[np.arange(k) % len(_PALETTE)]


def location_maps(model, view1, view2) -> dict:
    """Per-location scores of view 1's r1 (its components) against view 2's maps.

    Args:
        model: a `SelfSupervisedModel` trained with the AMDIM objective (any n_mix).
        view1, view2: normalised views, float32 [n, S, S, 3], n >= 2.
    Returns:
        numpy dict: "score7" [n, 7, 7] and "score5" [n, 5, 5] (the NCE log-softmax of
        the positive, or the mixture objective when n_mix > 0), "q7" [n, 7, 7, k] and
        "q5" [n, 5, 5, k] (q; k = 1 without mixtures), "n_mix".
    """
    objective = model.objective
    if not hasattr(objective, "location_scores"):
        raise UserError(
            f"{type(objective).__name__} has no per-location NCE scores; score maps and "
            "mixture assignments need a run with config.method='amdim'."
        )
    if int(view1.shape[0]) < 2:
        raise UserError(
            f"score maps need at least 2 images (the others are the negatives), received "
            f"{int(view1.shape[0])}."
        )
    feats1 = model.encoder(view1, training=False)
    feats2 = model.encoder(view2, training=False)
    scores = objective.location_scores(feats1, feats2)
    out = {"n_mix": int(objective.n_mix)}
    for name, key in (("1t7", "7"), ("1t5", "5")):
        side = int(feats2[f"r{key}"].shape[1])
        score = scores[name]["score"].numpy()  # [n, L]
        q = scores[name]["q"].numpy()  # [n, L, k]
        out[f"score{key}"] = score.reshape(-1, side, side)
        out[f"q{key}"] = q.reshape(-1, side, side, q.shape[-1])
    return out


def _upsample(grid, size):
    """[h, w, ...] -> [size, size, ...] by repeating cells (nearest neighbour)."""
    reps = -(-size // grid.shape[0])
    big = np.repeat(np.repeat(grid, reps, axis=0), reps, axis=1)
    return big[:size, :size]


def overlay_assignments(image, q, opacity=0.5):
    """image [S, S, 3] in [0, 1], q [h, w, k] -> [S, S, 3]: each cell tinted by argmax_j q_j."""
    colours = component_colours(q.shape[-1])[np.argmax(q, axis=-1)]  # [h, w, 3]
    tint = _upsample(colours, image.shape[0])  # [S, S, 3]
    return np.clip((1.0 - opacity) * image + opacity * tint, 0.0, 1.0)


def _figure(rows, cols, cell=1.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cols * cell, rows * cell + 0.5), dpi=100)
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    return fig, axes


def assignment_figure(images, q7, cols=8, title=None):
    """(a): images [n, S, S, 3] in [0, 1] and q7 [n, 7, 7, k] -> a `Figure`, one tile per image.

    Each tile is the image tinted, per r7 cell, with the colour of the component that
    q assigns the cell to; a tile's caption counts the cells each component took.
    """
    images, q7 = np.asarray(images), np.asarray(q7)
    n, k = len(images), q7.shape[-1]
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = _figure(rows, cols)
    colours = component_colours(k)
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(overlay_assignments(images[i], q7[i]), interpolation="nearest")
        counts = np.bincount(np.argmax(q7[i], -1).ravel(), minlength=k)
        ax.set_title(" ".join(str(c) for c in counts), fontsize=7)
    handles = [
        _patch(colours[j], f"component {j}") for j in range(k)
    ]  # legend: one swatch per component
    fig.legend(handles=handles, loc="lower center", ncol=min(k, 5), fontsize=7, frameon=False)
    fig.suptitle(
        title or f"r7 locations by mixture component (argmax q, k={k}); counts per component",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return fig


def _patch(colour, label):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, label=label)


def score_figure(view1, view2, score7, score5, title=None):
    """(b): per image, view 1 | view 2 | NCE score of view 1's r1 at view 2's r7 | at its r5.

    view1, view2: [n, S, S, 3] in [0, 1]; score7 [n, 7, 7], score5 [n, 5, 5]. Heat
    maps share one colour scale per column (brighter = the location is easier to
    pick out of the negatives).
    """
    view1, view2 = np.asarray(view1), np.asarray(view2)
    n = len(view1)
    fig, axes = _figure(n, 4)
    limits = {
        "7": (float(np.min(score7)), float(np.max(score7))),
        "5": (float(np.min(score5)), float(np.max(score5))),
    }
    headers = ("view 1", "view 2", "r1(1) vs r7(2)", "r1(1) vs r5(2)")
    for col, header in enumerate(headers):
        axes[0, col].set_title(header, fontsize=8)
    for i in range(n):
        axes[i, 0].imshow(view1[i])
        axes[i, 1].imshow(view2[i])
        for col, (key, score) in ((2, ("7", score7)), (3, ("5", score5))):
            lo, hi = limits[key]
            im = axes[i, col].imshow(score[i], cmap="viridis", vmin=lo, vmax=hi)
            if i == n - 1:
                # An inset below the last row: stealing space from the column would
                # shift its maps out of line with their views.
                cax = axes[i, col].inset_axes([0.0, -0.22, 1.0, 0.08])
                fig.colorbar(im, cax=cax, orientation="horizontal")
                cax.tick_params(labelsize=7)
    fig.suptitle(title or "NCE log-softmax score of the positive, per location", fontsize=9)
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    return fig


def figure_to_array(fig):
    """A `Figure` -> uint8 [H, W, 3] (Agg canvas, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def make_figures(model, images, preset, seed=0) -> dict:
    """The two figures for raw `images` [n, H, W, 3] (uint8, or float in [0, 1]).

    Returns {"score_maps": Figure, "assignments": Figure or absent when n_mix = 0}.
    `seed` fixes the augmented views of (b): image i gets the stateless key (seed, i).
    """
    images = tf.convert_to_tensor(images)
    n = int(images.shape[0])
    views = [
        augment.two_views(images[i], tf.constant([seed, i], tf.int64), preset) for i in range(n)
    ]
    view1 = tf.stack([v[0] for v in views])  # [n, S, S, 3]
    view2 = tf.stack([v[1] for v in views])  # [n, S, S, 3]
    maps = location_maps(model, view1, view2)
    figs = {
        "score_maps": score_figure(
            augment.denormalise(view1, preset).numpy(),
            augment.denormalise(view2, preset).numpy(),
            maps["score7"],
            maps["score5"],
            title=None
            if maps["n_mix"] == 0
            else f"mixture NCE objective per location (k={maps['n_mix']}), negatives: the others",
        )
    }
    if maps["n_mix"] > 0:
        clean = tf.stack([augment.eval_view(images[i], preset) for i in range(n)])  # [n, S, S, 3]
        own = location_maps(model, clean, clean)
        figs["assignments"] = assignment_figure(
            augment.denormalise(clean, preset).numpy(), own["q7"]
        )
    return figs


class VisualizeCallback(keras.callbacks.Callback):
    """TensorBoard images of `make_figures` every `every_steps` optimizer steps.

    Tags: "viz/score_maps" and, with n_mix > 0, "viz/mixture_assignments". Nothing is
    written when `every_steps` is 0 or `writer` is None (a non-chief worker).

    Args:
        images: raw images [n, H, W, 3] (uint8 or float in [0, 1]), n >= 2; the same
            images every time, so the maps are comparable across steps.
        preset: the augmentation preset of the run.
        every_steps: cadence (config.train.visualize_every_steps).
        writer: a `tf.summary` file writer (e.g. the run's MetricsLogger.writer).
        seed: fixes the augmented views.
    """

    def __init__(self, images, preset, every_steps, writer, seed=0):
        super().__init__()
        self.images = np.asarray(images)
        self.preset = preset
        self.every_steps = int(every_steps)
        self.writer = writer
        self.seed = seed
        self._last_step = None

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self._last_step = self._step()

    def on_train_batch_end(self, batch, logs=None):
        if not self.every_steps or self.writer is None:
            return
        step = self._step()
        # With steps_per_execution = N this runs every N steps: act when a multiple of
        # the period was passed, not only when it is hit exactly.
        if step // self.every_steps <= self._last_step // self.every_steps:
            return
        self._last_step = step
        self.log(step)

    def log(self, step):
        figs = make_figures(self.model, self.images, self.preset, self.seed)
        tags = {"score_maps": "viz/score_maps", "assignments": "viz/mixture_assignments"}
        with self.writer.as_default(step=step):
            for name, fig in figs.items():
                tf.summary.image(tags[name], figure_to_array(fig)[None], max_outputs=1)
        self.writer.flush()
