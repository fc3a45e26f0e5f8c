"""amdim-tf: AMDIM (Bachman, Hjelm & Buchwalter 2019) self-supervised learning in TF2 / Keras 3."""

import os

# Measured on 2-core x86 CPUs: oneDNN kernels make the AMDIM step ~1.7x faster
# and some TF builds leave them off there. Only effective before TF is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
