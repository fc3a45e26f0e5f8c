"""Pretraining: build data, model and optimizer from a config, then Keras `fit`.

Library code: takes a ConfigDict and explicit arguments, never absl FLAGS.
"""

import keras
import tensorflow as tf
from absl import logging

from amdim_tf import data as data_lib
from amdim_tf.build import build_model
from amdim_tf.model import StopOnNonFiniteLoss


def steps_per_epoch(config):
    if config.train.steps_per_epoch:
        return int(config.train.steps_per_epoch)
    n = data_lib.num_examples(config.data, config.data.train_split)
    steps = n // config.train.batch_size
    if steps < 1:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} is larger than the "
                         f"{n} training examples; lower the batch size.")
    return steps


def train(config, workdir=None, callbacks=()):
    """Pretrains as `config` says; returns (model, keras History)."""
    keras.utils.set_random_seed(config.seed)
    spe = steps_per_epoch(config)
    num_classes = data_lib.num_classes(config.data)
    train_ds = data_lib.make_pretrain_dataset(config.data, config.train.batch_size, config.seed)
    eval_ds = data_lib.make_eval_dataset(config.data, config.data.eval_split,
                                         config.train.eval_batch_size)
    model = build_model(config, spe, num_classes)
    logging.info("encoder: %d trainable parameters, %d steps per epoch",
                 sum(int(tf.size(v)) for v in model.encoder.trainable_variables), spe)
    cbs = [StopOnNonFiniteLoss()] + list(callbacks)
    if workdir:
        cbs.append(keras.callbacks.TensorBoard(log_dir=workdir, update_freq="epoch"))
    history = model.fit(train_ds, epochs=config.train.epochs, steps_per_epoch=spe,
                        validation_data=eval_ds, validation_steps=config.train.eval_steps or None,
                        callbacks=cbs, verbose=config.train.verbose)
    return model, history
