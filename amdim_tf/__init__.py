"""amdim-tf: AMDIM (Bachman, Hjelm & Buchwalter 2019) self-supervised learning in TF2 / Keras 3."""

import os

# Measured on 2-core x86 CPUs: oneDNN kernels make the AMDIM step ~1.7x faster
# and some TF builds leave them off there. Only effective before TF is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"


def load_encoder(path, include_preprocessing=False, which="latest", config=None):
    """The pretrained encoder at `path` (a work directory or a .keras file) as a keras.Model.

    See `amdim_tf.run.loader.load_encoder`; imported here on first use so that
    `import amdim_tf` stays light (no TensorFlow until a model is needed).
    """
    from amdim_tf.run import loader

    return loader.load_encoder(path, include_preprocessing, which, config)


def save_encoder(source, out, which="latest", config=None, overwrite=False):
    """Writes the encoder of `source` (a work directory, ...) to a `.keras` file.

    See `amdim_tf.run.loader.save_encoder`.
    """
    from amdim_tf.run import loader

    return loader.save_encoder(source, out, which, config, overwrite)
