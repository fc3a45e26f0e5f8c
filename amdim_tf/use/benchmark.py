"""Throughput measurements: the train step on synthetic data, the device's matmul peak, FLOPs.

Figures on shared machines are noisy (2-6x here), so every figure is a median
over steps after warm-up, and the numbers meant to be compared (step vs peak,
pipeline vs step) are measured side by side in one process. `measure_isolated`
runs one (model, batch) row in a fresh process, so that its peak memory is its
own and an out-of-memory row does not end a sweep.

Device-agnostic: on GPUs the peak is a matmul in the precision policy's compute
dtype (bfloat16 under mixed_bfloat16) on each replica's device, so
`--precision=bf16 --jit_compile` reports the fraction of the GPU's bf16 peak.
"""

import collections
import glob
import json
import os
import resource
import subprocess
import sys
import time

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from amdim_tf import compat, distribute
from amdim_tf.errors import UserError
from amdim_tf.methods import build_encoder
from amdim_tf.run.build import PRECISIONS, build_model, resolve_precision

# Encoder shapes of the presets, (ndf, n_rkhs, n_depth), at the config's image size.
MODEL_SHAPES = {
    "tiny": (8, 32, 1),  # config_lib.make_tiny (tests and smoke runs)
    "parity": (64, 512, 3),  # configs/amdim_cifar10_cpu.py (the official code's small run)
    "default": (128, 1024, 3),  # configs/amdim_cifar10.py
    "large8": (128, 1024, 8),  # the official code's CIFAR model at depth 8
    "large10": (256, 2048, 10),  # configs/amdim_cifar10_large.py (the paper's CIFAR model)
}
PRECISION_ALIASES = {
    "fp32": "float32",
    "bf16": "mixed_bfloat16",
    "fp16": "mixed_float16",
    **{p: p for p in PRECISIONS},
}


def with_model(config, name):
    """A copy of `config` whose encoder has the shape of MODEL_SHAPES[name]."""
    if name not in MODEL_SHAPES:
        raise UserError(f"Unknown model {name!r}; available: {sorted(MODEL_SHAPES)}.")
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.ndf, config.model.n_rkhs, config.model.n_depth = MODEL_SHAPES[name]
    return config


def precision_policy(name):
    """The Keras policy for --precision (fp32/bf16/fp16 or a policy name)."""
    if name not in PRECISION_ALIASES:
        raise UserError(f"Unknown precision {name!r}; available: {sorted(PRECISION_ALIASES)}.")
    return PRECISION_ALIASES[name]


class StepTimer(keras.callbacks.Callback):
    """Wall time of every train batch (Keras syncs on the logs at batch end)."""

    def __init__(self):
        super().__init__()
        self.times = []
        self._t0 = None

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if logs:
            float(next(iter(logs.values())))  # force the step to finish
        self.times.append(time.perf_counter() - self._t0)


def train_step_throughput(config, batch_size, steps=12, warmup=3, strategy=None, profile_dir=""):
    """Median encoder images/s of the train step (both views counted) on synthetic data.

    `batch_size` is the global batch (split over the strategy's replicas by Keras).
    With `profile_dir`, 3 more steps run under tf.profiler after the timed ones
    (so profiling never slows the timed steps), written for TensorBoard's Profile tab.
    Returns dict(images_per_sec, step_seconds, steps_timed).
    """
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    size = config.model.image_size
    with strategy.scope():
        model = build_model(config, steps_per_epoch=1000, num_classes=10)
    rng = np.random.RandomState(0)
    x1 = rng.randn(batch_size, size, size, 3).astype("float32")
    x2 = rng.randn(batch_size, size, size, 3).astype("float32")
    y = rng.randint(0, 10, batch_size).astype("int32")
    ds = tf.data.Dataset.from_tensors(((x1, x2), y)).repeat()
    timer = StepTimer()
    model.fit(ds, epochs=1, steps_per_epoch=steps + warmup, verbose=0, callbacks=[timer])
    step = float(np.median(timer.times[warmup:]))
    if profile_dir:
        tf.profiler.experimental.start(profile_dir)
        try:
            model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0)
        finally:
            tf.profiler.experimental.stop()
    return {
        "images_per_sec": 2 * batch_size / step,
        "step_seconds": step,
        "steps_timed": len(timer.times) - warmup,
    }


def matmul_peak_gflops(n=None, repeats=10, dtype=tf.float32, device=None):
    """Median GFLOP/s of an n x n matmul in `dtype` on `device`: its practical compute ceiling.

    n defaults to 2048 on CPU (larger is no faster there) and 8192 on GPU (smaller
    matmuls do not fill a large GPU)."""
    device = device or ("/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0")
    n = n or (8192 if "GPU" in device.upper() else 2048)
    with tf.device(device):
        a = tf.cast(tf.random.normal([n, n]), dtype)
        b = tf.cast(tf.random.normal([n, n]), dtype)
        f = tf.function(lambda a, b: tf.matmul(a, b))
        f(a, b).numpy()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a, b).numpy()  # .numpy() waits for the device
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times)) / 1e9


def encoder_forward_flops(encoder, batch_size=1):
    """Multiply-adds x 2 of one encoder forward pass, counted by TF's graph profiler
    (the registered FLOP statistics of Conv2D/MatMul ops), per `batch_size` images."""
    size = encoder.image_size
    fn = tf.function(lambda x: encoder(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([batch_size, size, size, 3], tf.float32))
    frozen = compat.freeze_variables(concrete)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts)
    return int(prof.total_float_ops)


def op_time_by_type(profile_dir, top=12):
    """Where the profiled steps spent their time, from the newest trace in `profile_dir`.

    Sums the durations of the TF ops the host's executor threads ran, by op type
    (e.g. _MklNativeConv2DBackpropFilter), and compares their total with the wall
    time of the steps: a ratio near the number of inter-op threads means no thread
    sat idle. On a GPU the kernels run on the device: read the trace in
    TensorBoard's Profile tab instead (this then returns what the host ran).
    Returns dict(wall_seconds, op_seconds, by_type=[(op type, seconds, share)]).
    """

    paths = sorted(glob.glob(os.path.join(profile_dir, "plugins", "profile", "*", "*.xplane.pb")))
    if not paths:
        raise FileNotFoundError(f"no profile (*.xplane.pb) under {profile_dir}/plugins/profile")
    space = compat.xplane_proto()()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    by_type, wall = collections.Counter(), 0
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for ev in line.events:
                name = plane.event_metadata[ev.metadata_id].name
                if line.name.startswith("python") and name == "multi_step_on_iterator":
                    wall += ev.duration_ps  # one Keras train function call
                elif line.name.startswith("tf_Compute") and ":" in name and "/" in name:
                    by_type[name.rsplit(":", 1)[1]] += ev.duration_ps  # "op/name:OpType"
    total = sum(by_type.values())
    return {
        "wall_seconds": wall / 1e12,
        "op_seconds": total / 1e12,
        "by_type": [(k, v / 1e12, v / total) for k, v in by_type.most_common(top)],
    }


def peak_memory_gib():
    """Peak device memory of this process: summed over GPUs if any, else the process's
    peak resident set (model, optimizer slots, activations, TF itself)."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return sum(tf.config.experimental.get_memory_info(d.name)["peak"] for d in gpus) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(config, batch_size, steps=12, warmup=3, profile_dir=""):
    """One benchmark row: the train step's images/s and GFLOP/s next to the device peak.

    GFLOP/s counts 3x the encoder's forward FLOPs per image (forward + backward);
    the peak is one device's matmul in the policy's compute dtype (the better of a
    measurement before and one after the steps) times the replicas.
    """
    name = config.distribute
    if name not in ("default", "mirrored"):
        raise UserError(
            f"the benchmark runs on one host: config.distribute={name!r} must be "
            "'default' or 'mirrored'."
        )
    strategy = distribute.make_strategy(name)
    encoder = build_encoder(config)
    encoder.build((None, config.model.image_size, config.model.image_size, 3))
    fwd_flops = encoder_forward_flops(encoder)
    compute_dtype = keras.DTypePolicy(resolve_precision(config.precision)).compute_dtype
    peak_dtype = tf.as_dtype(compute_dtype)
    peak_before = matmul_peak_gflops(dtype=peak_dtype)
    r = train_step_throughput(config, batch_size, steps, warmup, strategy, profile_dir)
    # Measured before and after the steps, keeping the larger: a neighbour's burst
    # during one measurement would otherwise pass for a low peak (seen: 342 vs 444).
    device_peak = max(peak_before, matmul_peak_gflops(dtype=peak_dtype))
    peak = device_peak * strategy.num_replicas_in_sync
    gflops = 3 * fwd_flops * r["images_per_sec"] / 1e9
    return dict(
        batch=batch_size,
        **r,
        forward_gflop_per_image=fwd_flops / 1e9,
        gflops_per_sec=gflops,
        peak_gflops=peak,
        fraction_of_peak=gflops / peak,
        peak_dtype=compute_dtype,
        replicas=strategy.num_replicas_in_sync,
        device="GPU" if tf.config.list_logical_devices("GPU") else "CPU",
        peak_memory_gib=peak_memory_gib(),
        **({"profile": op_time_by_type(profile_dir)} if profile_dir else {}),
    )


def measure_isolated(config, batch_size, steps=12, warmup=3, profile_dir=""):
    """`measure` in a fresh Python process (its own peak memory; an OOM is one failed row).

    Returns the row dict, or dict(batch=..., error="...") if the process failed."""
    request = json.dumps(
        {
            "config": json.loads(config.to_json_best_effort()),
            "batch": batch_size,
            "steps": steps,
            "warmup": warmup,
            "profile_dir": profile_dir,
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "amdim_tf.use.benchmark"],
        input=request,
        text=True,
        capture_output=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    if proc.returncode in (-9, 137):
        why = "killed (out of memory?)"
    else:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        why = f"exit code {proc.returncode}: {tail[0][:300]}"
    return {"batch": batch_size, "error": why}


def _child_main():
    request = json.loads(sys.stdin.read())
    config = ml_collections.ConfigDict(request["config"])
    row = measure(
        config,
        request["batch"],
        request["steps"],
        request["warmup"],
        request.get("profile_dir", ""),
    )
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    _child_main()


_ROW_HEADER = (
    "| model ndf/n_rkhs/depth | batch | images/s (both views) | step s | GFLOP/s | "
    "peak GFLOP/s | of peak | peak memory GiB |\n|---|---|---|---|---|---|---|---|"
)


def _row_line(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['batch']} | failed: {r['error']} | | | | | |"
    return (
        f"| {r['model']} | {r['batch']} | {r['images_per_sec']:.1f} | {r['step_seconds']:.3f} | "
        f"{r['gflops_per_sec']:.0f} | {r['peak_gflops']:.0f} {r['device']} "
        f"{r['peak_dtype']} | {100 * r['fraction_of_peak']:.0f}% | "
        f"{r['peak_memory_gib']:.1f} |"
    )


def _profile_lines(r: dict) -> list:
    p = r["profile"]
    lines = [
        f"\n{r['model']}, batch {r['batch']}: profiled op time {p['op_seconds']:.2f} s over "
        f"{p['wall_seconds']:.2f} s of steps ({p['op_seconds'] / p['wall_seconds']:.2f} ops "
        f"running at a time on average); trace in {r['profile_dir']}"
    ]
    lines += [
        f"  {op:45s} {seconds:7.3f} s {100 * share:5.1f}%" for op, seconds, share in p["by_type"]
    ]
    return lines


def _pipeline_table(data, path, row, seconds, say) -> list:
    """The input pipeline alone on the npz at `path`, per preset size, against `row`'s step."""
    import copy

    from amdim_tf import data as data_lib

    batch, step_pairs = row["batch"], row["images_per_sec"] / 2
    say(
        f"\ninput pipeline alone (two-view pairs/s, batch {batch}) vs the first train "
        f"step above ({step_pairs:.1f} pairs/s), same run:"
    )
    say("| preset | pipeline pairs/s | x train step |\n|---|---|---|")
    pipeline = []
    for size in (32, 64, 128):
        d = copy.deepcopy(data)
        d.source, d.path, d.image_size, d.augment, d.cache = ("npz", path, size, "", True)
        rate = data_lib.benchmark_pipeline(d, batch, seconds)
        pipeline.append(
            {"image_size": size, "pairs_per_sec": rate, "x_train_step": rate / step_pairs}
        )
        say(f"| {size} px | {rate:.0f} | {rate / step_pairs:.0f}x |")
    return pipeline


def run_tables(
    runs,
    batches,
    steps=12,
    warmup=3,
    profile_root="",
    pipeline_data="",
    pipeline_seconds=10.0,
    say=print,
) -> tuple[list, list]:
    """amdim-benchmark's tables: each (label, config) of `runs` at each batch size in a
    fresh process (`measure_isolated`), a row said as it is measured; then the profiles
    (with `profile_root`) and the input pipeline alone on `pipeline_data` (an npz).

    Returns:
        (the rows, one dict per model and batch, failed ones with "error"; the pipeline
        rows, empty without `pipeline_data` or a row that ran).
    """
    first = runs[0][1]
    say(
        f"{first.model.image_size} px images, precision {first.precision}, "
        f"jit_compile {first.jit_compile}; each row in a fresh process"
    )
    say(_ROW_HEADER)
    rows = []
    for label, cfg in runs:
        for b in batches:
            profile_dir = (
                os.path.join(profile_root, f"{label.split()[0]}_b{b}") if profile_root else ""
            )
            r = dict(
                model=label,
                profile_dir=profile_dir,
                **measure_isolated(cfg, b, steps, warmup, profile_dir),
            )
            rows.append(r)
            say(_row_line(r))
    for r in rows:
        if "profile" in r:
            for line in _profile_lines(r):
                say(line)
    ok = [r for r in rows if "error" not in r]
    pipeline = []
    if pipeline_data and ok:
        pipeline = _pipeline_table(first.data, pipeline_data, ok[0], pipeline_seconds, say)
    return rows, pipeline
