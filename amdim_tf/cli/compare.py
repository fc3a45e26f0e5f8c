"""AMDIM against DIM(L), DIM(G) and CPC: same data, same wall-clock budget, same frozen protocol.

    amdim-compare [--methods=amdim,dim_local,dim_global,cpc] [--seconds=600]
        [--data_source=npz --data_path=../shared/data/cifar10/cifar10-jpeg.npz --image_size=32]
        [--workdir=runs/compare]

Each method pretrains in WORKDIR/<method> for --seconds of wall time (or --steps),
then its frozen encoder goes through amdim-evaluate's protocol (logistic
regression and cosine kNN on r1 features of --max_train labelled train images,
scored on the whole eval split); raw pixels are evaluated once as the floor.
Writes WORKDIR/compare.md (the table), compare.json and compare.png (the online
eval linear probe against active wall time, from each metrics.jsonl).

Defaults, chosen so the encoders are of one size class (~5M parameters) where the
presets allow it:
  amdim       amdim_cifar10_cpu:parity  5.0M (ndf 64, n_rkhs 512, depth 3), batch 128
  dim_local   dim_local                 4.9M (DIM's own encoder, Y 64-d), batch 64
  dim_global  dim_global                4.9M (the same encoder), batch 64
  cpc         cpc                       1.4M (its only size), batch 64
Each method keeps its own optimiser and batch (--batch_size=N sets one for all);
learning-rate decay is switched off for all (a wall-clock budget has no known last
step to place it); warm-up is kept. An "epoch" here is --eval_every steps, so every
method gets an eval point at the same step interval; --eval_steps limits that online
eval (the final frozen evaluation always scores the whole eval split).

Re-running resumes: a method whose budget is spent (its pretraining seconds are kept in
WORKDIR/<method>/compare_state.json, or read from its metrics.jsonl if the tool was
killed) is not trained again, and its evaluation is reused
when the checkpoint step, --max_train and --k are unchanged. Raising --seconds trains
each method for the difference.
Cost: about (seconds + 1-2 min of evaluation) per method on CIFAR-10; the default run
is ~50 min on a 2-core CPU. Use --variant=tiny --data_source=digits for a smoke run.
"""

import sys

from absl import flags

from amdim_tf import cli
from amdim_tf.run.train import PREEMPTED_EXIT_CODE
from amdim_tf.use import compare as compare_lib

# The library's defaults are the command's defaults (one place to change them).
_D = compare_lib.CompareOptions
_DV = compare_lib.DEFAULT_VARIANTS

_METHODS = flags.DEFINE_list(
    "methods", list(_D.methods), f"Methods to compare, from {list(compare_lib.METHODS)}."
)
_AMDIM_VARIANT = flags.DEFINE_string(
    "amdim_variant",
    _DV["amdim"],
    "Variant of the amdim_cifar10_cpu preset (parity: 5.0M-parameter "
    "encoder of the official reference setup; '' the same encoder; small: 1.1M).",
)
_DIM_VARIANT = flags.DEFINE_string(
    "dim_variant",
    _DV["dim_local"],
    "Variant of the dim_local and dim_global presets ('' DIM's own 4.9M "
    "encoder; amdim: AMDIM's encoder at ndf 128, 20M, for a same-encoder comparison).",
)
_CPC_VARIANT = flags.DEFINE_string(
    "cpc_variant", _DV["cpc"], "Variant of the cpc preset ('' is its only size)."
)
_VARIANT = flags.DEFINE_string(
    "variant", "", "If set, the variant of every method (e.g. tiny for tests)."
)
_DATA_SOURCE = flags.DEFINE_string(
    "data_source",
    _D.data_source,
    "config.data.source of every method (npz | tfds | folder | tfrecord | digits).",
)
_DATA_PATH = flags.DEFINE_string(
    "data_path",
    _D.data_path,
    "config.data.path of every method (relative to the working directory).",
)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", _D.image_size, "config.data.image_size and model.image_size."
)
_SECONDS = flags.DEFINE_integer(
    "seconds",
    _D.seconds,
    "Pretraining wall-clock budget per method "
    "(config.train.max_seconds); 0 = no time limit (then set --steps).",
)
_STEPS = flags.DEFINE_integer(
    "steps",
    _D.steps,
    "Pretraining steps per method, rounded up to whole "
    "--eval_every intervals; 0 = until --seconds run out.",
)
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every",
    _D.eval_every,
    "Steps between online eval probe points (sets config.train.steps_per_epoch).",
)
_EVAL_STEPS = flags.DEFINE_integer(
    "eval_steps",
    _D.eval_steps,
    "Batches of config.train.eval_batch_size in each online eval (0 = the whole eval split).",
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size",
    _D.batch_size,
    "Pretraining batch of every method (0 = each config's own).",
)
_SET = flags.DEFINE_multi_string(
    "set",
    [],
    "KEY=VALUE config override for every method, or METHOD:KEY=VALUE for one, "
    "e.g. --set=cpc:model.ndf=64 --set=seed=2. Applied last.",
)
_WORKDIR = flags.DEFINE_string("workdir", _D.workdir, "Each method runs in WORKDIR/<method>.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    _D.overwrite,
    "Replace a method's run whose config differs (otherwise that is refused).",
)
_MAX_TRAIN = flags.DEFINE_integer(
    "max_train", _D.max_train, "Train examples used to fit the frozen classifiers."
)
_K = flags.DEFINE_integer("k", _D.k, "Neighbours of the cosine kNN.")


def _run():
    per_method = {
        "amdim": _AMDIM_VARIANT,
        "dim_local": _DIM_VARIANT,
        "dim_global": _DIM_VARIANT,
        "cpc": _CPC_VARIANT,
    }
    cli.check_name_lengths("workdir", _WORKDIR.value)

    options = compare_lib.CompareOptions(
        methods=tuple(_METHODS.value),
        variants={m: _VARIANT.value or f.value for m, f in per_method.items()},
        data_source=_DATA_SOURCE.value,
        data_path=_DATA_PATH.value,
        image_size=_IMAGE_SIZE.value,
        seconds=_SECONDS.value,
        steps=_STEPS.value,
        eval_every=_EVAL_EVERY.value,
        eval_steps=_EVAL_STEPS.value,
        batch_size=_BATCH_SIZE.value,
        overrides=tuple(_SET.value),
        workdir=_WORKDIR.value,
        overwrite=_OVERWRITE.value,
        max_train=_MAX_TRAIN.value,
        k=_K.value,
    )
    result = compare_lib.compare(options)
    if result["status"] == "preempted":
        print(f"{result['preempted']} preempted; re-run the same command to continue.")
        sys.exit(PREEMPTED_EXIT_CODE)
    paths = result["paths"]
    print()
    print(result["table"])
    print(f"wrote {paths['md']}, compare.json and {paths['png']}")


main = cli.command(__name__, _run)


if __name__ == "__main__":
    main()
