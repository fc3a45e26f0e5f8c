"""Label-free health of the representation during pretraining, and a collapse alarm.

A contrastive loss can stay flat while the representation degrades, and the online kNN
needs labels a user of an unlabelled folder does not have. At every epoch end
`HealthMonitor` encodes a fixed, seeded sample of training images (two augmented views
each, the same every epoch; no labels) and logs, under `health/`:

- `health/rank`: effective rank of r1, RankMe (Garrido et al. 2023, "RankMe: Assessing
  the downstream performance of pretrained self-supervised representations by their
  rank", eq. 1): exp of the entropy of the singular values of the [N, D] feature matrix,
  normalised to sum to 1. 1 for a collapsed encoder (constant output, or one direction),
  D at best; `health/rank_fraction` is rank / D.
- `health/alignment`: mean squared distance of the two views' L2-normalised r1 (Wang &
  Isola 2020, "Understanding contrastive representation learning through alignment and
  uniformity on the hypersphere", alpha = 2); lower is better aligned.
- `health/uniformity`: log of the mean Gaussian potential exp(-t ||u - v||^2), t = 2, over
  distinct pairs of normalised r1 (ibid.); lower is more uniform; 0 for collapse.
- `health/dim_std`: mean over dimensions of the standard deviation of normalised r1
  (the per-dimension spread; SimSiam, Chen & He 2021, watch it fall to 0 at collapse).

The alarm: when the rank falls below max(2, `min_rank_fraction` x min(N, D)), a warning
says so at that epoch; with `stop_on_collapse` the run also stops there, after the
epoch's checkpoint (the checkpointer runs after this callback and saves every epoch end),
so the last weights are kept for inspection. N images can show a rank of at most
min(N, D), so a floor taken from D alone would fire on a healthy run of a small sample;
a sample of 2 (or D = 2) cannot show a rank above the floor of 2 at all, and is said to
be too small once instead of raising the alarm.

The metrics are pure NumPy functions of features, tested against direct formulas.
"""

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from amdim_tf import data as data_lib
from amdim_tf.data import augment, samples
from amdim_tf.methods.features import GLOBAL
from amdim_tf.run.neighbours import l2_normalise

PREFIX = "health/"
_EPS = 1e-7  # RankMe's epsilon inside the log of the normalised singular values


def _normalised(z):
    return l2_normalise(z, np.float64)  # float64: the statistics sum over many pairs


def effective_rank(z) -> float:
    """RankMe of features z [N, D]: exp(-sum p log p), p = singular values / their sum."""
    s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)  # [min(N, D)]
    p = s / max(float(s.sum()), 1e-12) + _EPS  # [min(N, D)]
    return float(np.exp(-np.sum(p * np.log(p))))


def alignment(z1, z2) -> float:
    """Mean squared distance of the normalised rows of two views [N, D]."""
    u, v = _normalised(z1), _normalised(z2)
    return float(np.mean(np.sum((u - v) ** 2, axis=1)))


def uniformity(z, t: float = 2.0) -> float:
    """log mean over distinct pairs i < j of exp(-t ||u_i - u_j||^2), u = normalised z."""
    u = _normalised(z)  # [N, D]
    sq = np.maximum(2.0 - 2.0 * (u @ u.T), 0.0)  # [N, N]: unit vectors
    iu = np.triu_indices(len(u), k=1)
    potential = -t * sq[iu]  # [N (N - 1) / 2]
    # log-mean-exp, stable: the largest term factored out.
    top = potential.max()
    return float(top + np.log(np.mean(np.exp(potential - top))))


def dimension_std(z) -> float:
    """Mean over dimensions of the standard deviation of the normalised rows of z."""
    return float(np.mean(np.std(_normalised(z), axis=0)))


def health_metrics(z1, z2) -> dict:
    """Every monitor of two views' features [N, D], under its `health/` tag."""
    rank = effective_rank(z1)
    return {
        f"{PREFIX}rank": rank,
        f"{PREFIX}rank_fraction": rank / z1.shape[1],
        f"{PREFIX}alignment": alignment(z1, z2),
        f"{PREFIX}uniformity": uniformity(z1),
        f"{PREFIX}dim_std": dimension_std(z1),
    }


def rank_threshold(dim: int, min_rank_fraction: float, num_examples: int | None = None):
    """The effective rank under which the alarm fires: max(2, fraction x min(N, D)).

    None when the sample cannot tell: its highest possible rank, min(N, D), is no more
    than the floor of 2 (N = `num_examples`; None counts as unbounded).
    """
    highest = int(dim) if num_examples is None else min(int(dim), int(num_examples))
    if highest <= 2:
        return None
    return max(2.0, float(min_rank_fraction) * highest)


def sample_view_pairs(data, num_examples: int, seed: int):
    """A fixed seeded sample of training images as two augmented views (no labels).

    Returns (view1, view2), float32 [n, S, S, 3], n = min(num_examples, images), drawn
    uniformly from the pretraining split (the unlabelled part included) before decoding;
    the views use the training augmentation with seeds fixed per image.
    """
    source = data_lib.opened(data)
    section = source.data
    preset = augment.preset_for(section.augment, section.image_size)
    key = tf.constant([1, seed], tf.int64)

    def views(i, image):
        return augment.two_views(image, tf.random.experimental.stateless_fold_in(key, i), preset)

    firsts, seconds = [], []
    split = data_lib.pretrain_split(source)
    for ds in samples.chosen_examples(source, split, num_examples, seed):
        for v1, v2 in ds.map(views).batch(256).as_numpy_iterator():
            firsts.append(v1)
            seconds.append(v2)
    return np.concatenate(firsts), np.concatenate(seconds)


class HealthMonitor(keras.callbacks.Callback):
    """Logs the `health/` monitors every epoch end and raises the collapse alarm.

    Place it after the kNN monitor and before `callbacks.MetricsLogger` and
    `callbacks.Checkpointer` in the callbacks list: it writes through `logger` (its
    `write(step, scalars)`), and a stop it requests is checkpointed by the checkpointer
    at the same epoch end.

    Args:
        data: the `data` config section, or the `Source` the run opened from it.
        num_examples: images in the fixed sample (0 turns the monitor off).
        logger: a `callbacks.MetricsLogger` (None: values only in `self.last`).
        min_rank_fraction: the alarm fires when the effective rank
            < max(2, this x min(N, D)), N the images sampled.
        stop_on_collapse: also stop training at the alarm.
        seed: fixes the sample and its views.
        batch_size: encoding batch.
        encoder: default `self.model.encoder`.
    """

    def __init__(
        self,
        data,
        num_examples,
        logger=None,
        min_rank_fraction=0.01,
        stop_on_collapse=False,
        seed=0,
        batch_size=256,
        encoder=None,
    ):
        super().__init__()
        self.data = data
        self.num_examples = int(num_examples)
        self.logger = logger
        self.min_rank_fraction = float(min_rank_fraction)
        self.stop_on_collapse = bool(stop_on_collapse)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.encoder = encoder
        self._views = None
        self.last = None
        self.collapsed = False  # the alarm fired at the last epoch end
        self._said_too_small = False
        self.stopped = False  # ... and stopped the run

    def _features(self, encoder, views):
        out = []
        for i in range(0, len(views), self.batch_size):
            r1 = encoder(views[i : i + self.batch_size], training=False)[GLOBAL]  # [B, 1, 1, D]
            out.append(tf.reshape(tf.cast(r1, tf.float32), [tf.shape(r1)[0], -1]).numpy())
        return np.concatenate(out)  # [n, D]

    def measure(self, encoder) -> dict:
        """The `health/` scalars of `encoder` on the fixed sample."""
        if self._views is None:
            self._views = sample_view_pairs(self.data, self.num_examples, self.seed)
        z1 = self._features(encoder, self._views[0])  # [n, D]
        z2 = self._features(encoder, self._views[1])  # [n, D]
        return health_metrics(z1, z2)

    def on_epoch_end(self, epoch, logs=None):
        if self.num_examples <= 0:
            return
        encoder = self.encoder if self.encoder is not None else self.model.encoder
        self.last = self.measure(encoder)
        step = int(self.model.optimizer.iterations.numpy()) if self.model else epoch
        if self.logger is not None:
            self.logger.write(step, self.last)
        rank = self.last[f"{PREFIX}rank"]
        dim = round(rank / self.last[f"{PREFIX}rank_fraction"])
        sampled = len(self._views[0])
        floor = rank_threshold(dim, self.min_rank_fraction, sampled)
        if floor is None:
            if not self._said_too_small:
                logging.warning(
                    "The collapse alarm is off: %d sampled images of r1 (D=%d) can show an "
                    "effective rank of at most %d, too small to tell a collapse "
                    "(train.health_examples=%d); raise it to 3 or more to turn it on.",
                    sampled,
                    dim,
                    min(sampled, dim),
                    self.num_examples,
                )
                self._said_too_small = True
            self.collapsed = False
            return
        self.collapsed = rank < floor
        if self.collapsed:
            logging.warning(
                "COLLAPSE ALARM at epoch %d (step %d): the effective rank of r1 is %.2f of "
                "at most %d (D=%d, %d sampled images), under %.2f "
                "(train.collapse_rank_fraction=%g); the encoder maps "
                "images to (nearly) one direction. %s",
                epoch + 1,
                step,
                rank,
                min(sampled, dim),
                dim,
                sampled,
                floor,
                self.min_rank_fraction,
                "Stopping after this epoch's checkpoint (train.stop_on_collapse)."
                if self.stop_on_collapse
                else "Set --config.train.stop_on_collapse=True to stop runs here.",
            )
            if self.stop_on_collapse and self.model is not None:
                self.model.stop_training = True
                self.stopped = True
