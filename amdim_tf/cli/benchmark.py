"""Benchmarks the train step on this machine: images/s and GFLOP/s against the device's peak.

Examples (the figures in BUILD.md):
    amdim-benchmark --config=configs/amdim_cifar10.py --batch_sizes=200
    amdim-benchmark --models=tiny,default,large8,large10 --batch_sizes=64,128,256
On a GPU, unchanged (the peak is then a bf16 matmul on the GPU):
    amdim-benchmark --models=default,large10 --precision=bf16 --jit_compile
Where the time goes (tf.profiler trace per row, and a table by op type):
    amdim-benchmark --models=parity --batch_sizes=128 --profile_dir=/tmp/prof
Each (model, batch) row runs in a fresh process (its own peak memory; an out-of-memory
row is reported, not fatal). Figures are medians after warm-up; compare ratios
measured in one run, since shared machines vary 2-6x between runs.
"""

import os

from absl import flags
from ml_collections import config_flags

from amdim_tf import cli, presets

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    presets.resolve("amdim_cifar10"),
    "Run configuration whose model is benchmarked (a preset name or a config file).",
)
_MODELS = flags.DEFINE_list(
    "models",
    [],
    "Encoder shapes to time instead of the config's own: tiny (8/32/1), parity "
    "(64/512/3), default (128/1024/3), large8 (128/1024/8), large10 (256/2048/10), as "
    "ndf/n_rkhs/depth at the config's image size.",
)
_BATCHES = flags.DEFINE_list("batch_sizes", ["200"], "Global batch sizes to time.")
_PRECISION = flags.DEFINE_string(
    "precision",
    "",
    "fp32, bf16 (mixed_bfloat16) or fp16 (mixed_float16, loss-scaled); "
    "default: the config's. The peak is then a matmul in that compute dtype.",
)
_JIT = flags.DEFINE_bool("jit_compile", None, "XLA for the train step (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", 12, "Timed train steps per row (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, allocator warm-up).")
_JSON = flags.DEFINE_string("json", "", "Also write the results to this JSON file.")
_PROFILE = flags.DEFINE_string(
    "profile_dir",
    "",
    "Also profile 3 steps per row after the timed ones (tf.profiler; open "
    "in TensorBoard's Profile tab) and print where the time went, by op type.",
)
_PIPELINE = flags.DEFINE_string(
    "pipeline_data",
    "",
    "Also time the input pipeline alone for the 32/64/128 px presets on "
    "this npz file (e.g. ../shared/data/cifar10/cifar10-jpeg-small.npz), next to the train step.",
)
_PIPELINE_SECONDS = flags.DEFINE_float(
    "pipeline_seconds", 10.0, "Seconds per pipeline measurement."
)


def _configs(config, benchmark):
    """(label, config) per model to time."""
    config = config.copy_and_resolve_references()
    if _PRECISION.value:
        config.precision = benchmark.precision_policy(_PRECISION.value)
    if _JIT.value is not None:
        config.jit_compile = _JIT.value
    if not _MODELS.value:
        m = config.model
        return [(f"{m.ndf}/{m.n_rkhs}/{m.n_depth}", config)]
    return [
        (
            f"{name} {'/'.join(map(str, benchmark.MODEL_SHAPES.get(name, ())))}",
            benchmark.with_model(config, name),
        )  # raises on an unknown name
        for name in _MODELS.value
    ]


def run():
    from amdim_tf import durable
    from amdim_tf.use import benchmark

    config = cli.load_config_flag(_CONFIG)
    try:
        batches = [int(b) for b in _BATCHES.value]
    except ValueError:
        cli.fail(f"--batch_sizes={','.join(_BATCHES.value)} must be integers, e.g. 64,128,256")
    if _PIPELINE.value and not os.path.exists(_PIPELINE.value):
        raise FileNotFoundError(f"--pipeline_data={_PIPELINE.value} does not exist")
    rows, pipeline = benchmark.run_tables(
        _configs(config, benchmark),
        batches,
        _STEPS.value,
        _WARMUP.value,
        _PROFILE.value,
        pipeline_data=_PIPELINE.value,
        pipeline_seconds=_PIPELINE_SECONDS.value,
        say=lambda line: print(line, flush=True),
    )
    if _JSON.value:
        durable.write_json(
            _JSON.value, {"rows": rows, "pipeline": pipeline}, indent=1, sort_keys=False,
            flag="--json",
        )  # fmt: skip
    if not any("error" not in r for r in rows):
        cli.fail("every benchmark row failed (see above)", code=1)


main = cli.command(__name__, run, quiet=False)


if __name__ == "__main__":
    main()
