"""Reading a training run back: its encoder from the work directory's checkpoints.

Partial restore of a named sub-module (the Model Garden way): only the encoder
is bound, and we assert that every encoder variable found its value, so a
mismatched architecture fails loudly instead of evaluating random weights.
"""

import os

import keras
import tensorflow as tf

from amdim_tf.build import build_encoder


def checkpoint_path(workdir, which="latest"):
    folder = os.path.join(workdir, "checkpoints" if which == "latest" else "best")
    path = tf.train.latest_checkpoint(folder)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {folder}; train first (tools/train.py "
                                f"--workdir={workdir}) or pick --which=latest.")
    return path


def restore_encoder(encoder, path):
    """Loads the encoder weights of a run checkpoint (model/encoder/...) into `encoder`.

    Every encoder variable is first set to NaN, so one that the checkpoint does
    not hold (another architecture, or a layer hidden from tf.train) is caught
    rather than left at its random initial value.
    """
    for v in encoder.variables:
        v.assign(tf.fill(v.shape, float("nan")))
    holder = tf.Module()
    holder.encoder = encoder
    status = tf.train.Checkpoint(model=holder).read(path)
    status.expect_partial()
    status.assert_existing_objects_matched()
    missing = [v.path for v in encoder.variables if bool(tf.reduce_all(tf.math.is_nan(v)))]
    if missing:
        raise ValueError(f"checkpoint {path} holds no value for {len(missing)} encoder variables "
                         f"(e.g. {missing[0]}); it was written by a different architecture or code "
                         "version. Evaluate it with the code that trained it.")
    return encoder


def untrained_encoder(config, seed=None):
    keras.utils.set_random_seed(config.seed if seed is None else seed)
    enc = build_encoder(config)
    size = config.model.image_size
    enc.build((None, size, size, 3))
    return enc


def load_trained_encoder(config, workdir, which="latest"):
    """(encoder, checkpoint name) of the run in `workdir`."""
    path = checkpoint_path(workdir, which)
    enc = untrained_encoder(config)
    restore_encoder(enc, path)
    return enc, os.path.basename(path)
