"""Pretrains an encoder: `amdim-train --config=<preset>[:variant] --workdir=DIR`.

--config names a preset of amdim_tf/presets (amdim_cifar10_cpu:parity) or a config
file (configs/amdim_cifar10.py:tiny, as `python tools/train.py` has always taken).

Override any config value with --config.<section>.<key>=VALUE (type-checked; an
unknown key is an error). Re-running the same command on the same DIR resumes
from its latest checkpoint, even after kill -9. SIGTERM writes a checkpoint and
exits with 143; Ctrl-C (SIGINT) writes a checkpoint and exits with 130, and a
second Ctrl-C aborts at once (exit 130, the latest checkpoint stays). One run at a
time per DIR: a second one is refused while the first holds DIR/.lock.
Watch it with `tensorboard --logdir DIR`.
"""

import sys

from absl import flags
from ml_collections import config_flags

from amdim_tf import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Run configuration: a preset name (amdim_cifar10, amdim_cifar10_cpu:parity) or a "
    "config file (configs/amdim_cifar10.py); append ':tiny' for a seconds-long smoke run. Override values with --config.train.batch_size=128 etc.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Directory for config.json, checkpoints, TensorBoard logs and "
    "metrics.jsonl. An existing directory of the same run is resumed.",
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "If --workdir holds a run with a different config, delete it and start "
    "again (otherwise that is refused).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _run():
    cli.check_name_lengths("workdir", _WORKDIR.value)
    from amdim_tf.run.train import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE, train

    config = cli.load_config_flag(_CONFIG)
    _, result = train(config, _WORKDIR.value, overwrite=_OVERWRITE.value)
    print(f"{result['status']} ({result['start']}); workdir {_WORKDIR.value}", flush=True)
    if result["status"] == "preempted":
        sys.exit(PREEMPTED_EXIT_CODE)
    if result["status"] == "interrupted":
        sys.exit(INTERRUPTED_EXIT_CODE)


# A Ctrl-C before training began, or a second one during it (the first one writes a
# checkpoint and returns "interrupted").
main = cli.command(
    __name__,
    _run,
    interrupted="interrupted (Ctrl-C) without a checkpoint of this step; rerun the same "
    "command to resume from the latest one.",
)


if __name__ == "__main__":
    main()
