"""Online kNN accuracy during pretraining: a cheap, label-free-training signal of collapse.

At every epoch end (the cadence of Keras validation), the frozen r1 features of a seeded,
class-balanced sample of the eval split are classified by a cosine kNN (k=20, majority
vote: `features.knn_accuracy`, the frozen protocol's kNN) against a seeded,
class-balanced sample of the train split. Unlike the online linear probe, it trains
nothing, so it cannot hide a collapsed encoder behind a head that learned anyway: constant
features score chance (1 / classes), a useful encoder scores well above (the kNN
protocol of Wu et al. 2018, as monitored online by e.g. DINO).
"""

import keras

from amdim_tf import data as data_lib
from amdim_tf.run import features

LOG_KEY = "val_probe/knn_acc"  # callbacks.eval_scalars logs it as probe/eval_knn_acc


class KNNMonitor(keras.callbacks.Callback):
    """Puts the cosine kNN accuracy of the encoder's r1 into the epoch logs.

    Place it BEFORE `callbacks.MetricsLogger` in the callbacks list: Keras hands every
    callback the same logs dict in list order, and the logger writes the keys starting
    with "val_probe/" (renamed "probe/eval_*") to TensorBoard and metrics.jsonl, so this
    value appears there as `probe/eval_knn_acc`.

    Args:
        data: the `data` config section, or the `Source` the run opened from it.
        num_examples: size of each balanced sample (queries from `eval_split`,
            references from `train_split`); 0 turns the monitor off.
        k: neighbours of the majority vote.
        seed: fixes both samples, so every epoch scores the same images.
        batch_size: encoding batch.
        train_split / eval_split: default data.train_split / data.eval_split.
        encoder: default `self.model.encoder` (the pretraining model's encoder).
    """

    def __init__(
        self,
        data,
        num_examples,
        k=20,
        seed=0,
        batch_size=256,
        train_split=None,
        eval_split=None,
        encoder=None,
    ):
        super().__init__()
        self.data = data
        self.num_examples = int(num_examples)
        self.k = int(k)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        section = data_lib.data_section(data)
        self.train_split = train_split or section.train_split
        self.eval_split = eval_split or section.eval_split
        self.encoder = encoder
        self._datasets = None
        self.last_accuracy = None

    def _samples(self):
        if self._datasets is None:
            # Built once: with data.cache the decoded sample stays in memory across epochs.
            self._datasets = tuple(
                data_lib.make_eval_dataset(
                    self.data,
                    split,
                    self.batch_size,
                    max_examples=self.num_examples,
                    sample_seed=self.seed,
                    balanced=True,
                )
                for split in (self.train_split, self.eval_split)
            )
        return self._datasets

    def accuracy(self, encoder) -> float:
        """kNN accuracy of `encoder`'s r1 on the two samples."""
        references, queries = self._samples()
        train_x, train_y = features.extract_features(encoder, references)
        test_x, test_y = features.extract_features(encoder, queries)
        return features.knn_accuracy(train_x, train_y, test_x, test_y, k=self.k)

    def on_epoch_end(self, epoch, logs=None):
        if self.num_examples <= 0 or logs is None:
            return
        encoder = self.encoder if self.encoder is not None else self.model.encoder
        self.last_accuracy = self.accuracy(encoder)
        logs[LOG_KEY] = self.last_accuracy
