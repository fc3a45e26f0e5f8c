"""An embed output written from given features, without an encoder: for tests of what
search and inspection do with the rows (non-finite rows, duplicate groups)."""

import json
import os

import numpy as np


def write_index(directory, features, labels=None, class_names=(), split="test", ids=None):
    """Writes r1.npy, index.tsv and embed.json of `features` float [N, D] into `directory`."""
    os.makedirs(directory, exist_ok=True)
    features = np.asarray(features, np.float32)
    n = len(features)
    labels = [-1] * n if labels is None else [int(v) for v in labels]
    ids = ids or [f"{split}:{i}" for i in range(n)]
    np.save(os.path.join(directory, "r1.npy"), features)
    with open(os.path.join(directory, "index.tsv"), "w") as f:
        f.write("id\tlabel\tclass\n")
        for name, label in zip(ids, labels, strict=True):
            cls = class_names[label] if label >= 0 else ""
            f.write(f"{name}\t{label if label >= 0 else ''}\t{cls}\n")
    summary = {"encoder": "synthetic", "split": split, "features": {"r1": list(features.shape)}}
    with open(os.path.join(directory, "embed.json"), "w") as f:
        json.dump(summary, f)
    return str(directory)
