"""amdim-tf: AMDIM (Bachman, Hjelm & Buchwalter 2019) self-supervised learning in TF2 / Keras 3.

`import amdim_tf` registers every Keras class the project saves (the encoders, their
layers, `PixelEncoder`, `PixelClassifier`), so `keras.saving.load_model` reads every
`.keras` file it writes with no other import. That imports TensorFlow (measured on the
2-core CPU of this project: `import amdim_tf` 0.05 s before, 3-10 s after, about what
`import tensorflow` costs on its own; every use of the package needs TensorFlow
anyway). The environment TensorFlow reads once, when it loads, is set first: oneDNN on,
the Keras backend, and TF's C++ log level (INFO and WARNING lines hidden; set
TF_CPP_MIN_LOG_LEVEL=0 before importing to see them). Each is a default: a value set
before the import wins.
"""

import os

# Measured on 2-core x86 CPUs: oneDNN kernels make the AMDIM step ~1.7x faster
# and some TF builds leave them off there. Only effective before TF is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TF reads this once, when it loads; the commands (amdim_tf/cli) import this file first.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# Registers the Keras classes (after the environment above; see the module docstring).
from amdim_tf import methods as _methods  # noqa: F401
from amdim_tf.run import pixels as _pixels  # noqa: F401


def load_encoder(path, include_preprocessing=True, which="latest", config=None, features=("r1",)):
    """The pretrained encoder at `path` (a work directory or a .keras file) as a keras.Model
    taking pixels 0..255 of any size (`include_preprocessing=False`: the bare encoder).

    See `amdim_tf.run.loader.load_encoder`.
    """
    from amdim_tf.run import loader

    return loader.load_encoder(path, include_preprocessing, which, config, features)


def save_encoder(source, out, which="latest", config=None, overwrite=False):
    """Writes the encoder of `source` (a work directory, ...) to a `.keras` file.

    See `amdim_tf.run.loader.save_encoder`.
    """
    from amdim_tf.run import loader

    return loader.save_encoder(source, out, which, config, overwrite)
