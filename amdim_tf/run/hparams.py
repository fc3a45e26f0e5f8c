"""A run's hyperparameters for TensorBoard's HParams dashboard.

`write_hparams(writer, config)` records the resolved config, flattened to dotted keys
(`model.ndf`, `optim.lr`, ...), as the run's HParams session
(`tensorboard.plugins.hparams.api.hparams`). It goes to the same event files as the
run's scalars, so the HParams tab shows each run's hyperparameters beside the last value
of every scalar it logged (probe/eval_linear_acc, probe/eval_knn_acc, health/rank, ...):
work directories under one `--logdir` compare side by side, as `amdim-compare`'s
runs do.
"""

import os

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp


def flat_hparams(config) -> dict:
    """{dotted key: bool | int | float | str} of a config (sequences as their text)."""
    out = {}

    def walk(prefix, value):
        if hasattr(value, "items"):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
            return
        key = prefix[:-1]
        if value is None:
            out[key] = ""
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = str(tuple(value) if isinstance(value, list) else value)

    walk("", config.to_dict() if hasattr(config, "to_dict") else config)
    return out


def write_hparams(writer, config, trial_id: str | None = None) -> dict:
    """Writes `config` as the HParams session of the run that `writer` logs; returns it."""
    values = flat_hparams(config)
    if writer is None:
        return values
    with writer.as_default():
        hp.hparams(values, trial_id=trial_id)
    writer.flush()
    return values


def read_hparams(logdir) -> dict:
    """The hyperparameters recorded in the event files of `logdir` (the last session)."""
    from tensorboard.plugins.hparams import metadata

    found = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag != metadata.SESSION_START_INFO_TAG:
                    continue
                data = metadata.parse_session_start_info_plugin_data(
                    value.metadata.plugin_data.content
                )
                found = {k: getattr(v, v.WhichOneof("kind")) for k, v in data.hparams.items()}
    return found
