"""Benchmarks the AMDIM train step on this machine (images/s, GFLOP/s vs matmul peak).

Example (the figure in BUILD.md):
    python tools/benchmark.py --config=configs/amdim_cifar10.py --batch_sizes=200
Figures are medians after warm-up; compare ratios measured in one run, since
shared machines vary 2-6x between runs.
"""

import _common  # noqa: F401  (repo root on sys.path, amdim_tf before TF)
import json
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/amdim_cifar10.py",
                                          "Run configuration whose model is benchmarked.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["200"], "Global batch sizes to time.")
_STEPS = flags.DEFINE_integer("steps", 12, "Timed train steps per batch size (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, allocator warm-up).")
_JSON = flags.DEFINE_string("json", "", "Also write the results to this JSON file.")
_PIPELINE = flags.DEFINE_string(
    "pipeline_data", "", "Also time the input pipeline alone for the 32/64/128 px presets on "
    "this npz file (e.g. ../shared/data/cifar10/cifar10-jpeg-small.npz), next to the train step.")
_PIPELINE_SECONDS = flags.DEFINE_float("pipeline_seconds", 10.0, "Seconds per pipeline measurement.")


def main(argv):
    if len(argv) > 1:
        _common.fail(f"unexpected arguments {argv[1:]}; every option is a --flag (see --help).")
    _common.run_main(lambda: run())


def run():
    from amdim_tf import benchmark  # noqa: PLC0415
    from amdim_tf.build import build_encoder  # noqa: PLC0415

    config = _common.load_config_flag(_CONFIG)
    enc = build_encoder(config)
    enc.build((None, config.model.image_size, config.model.image_size, 3))
    fwd_flops = benchmark.encoder_forward_flops(enc)
    peak = benchmark.matmul_peak_gflops()
    rows = []
    for b in (int(x) for x in _BATCHES.value):
        r = benchmark.train_step_throughput(config, b, _STEPS.value, _WARMUP.value)
        # forward + backward ~ 3x the forward FLOPs per encoded image
        gflops = 3 * fwd_flops * r["images_per_sec"] / 1e9
        rows.append(dict(batch=b, **r, gflops_per_sec=gflops, fraction_of_matmul_peak=gflops / peak))
    import resource  # noqa: PLC0415
    # Peak resident memory of this process so far (model, optimizer slots, activations).
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    m = config.model
    print(f"peak process memory {peak_rss_gib:.2f} GiB")
    print(f"model {m.image_size}px ndf {m.ndf} n_rkhs {m.n_rkhs} depth {m.n_depth}; "
          f"forward {fwd_flops / 1e9:.3f} GFLOP/image; matmul peak {peak:.0f} GFLOP/s")
    print("| batch | images/s (both views) | step s | GFLOP/s | of matmul peak |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['images_per_sec']:.1f} | {r['step_seconds']:.3f} | "
              f"{r['gflops_per_sec']:.0f} | {100 * r['fraction_of_matmul_peak']:.0f}% |")
    pipeline = []
    if _PIPELINE.value:
        import copy  # noqa: PLC0415

        from amdim_tf import data as data_lib  # noqa: PLC0415
        if not os.path.exists(_PIPELINE.value):
            raise FileNotFoundError(f"--pipeline_data={_PIPELINE.value} does not exist")
        batch = rows[0]["batch"]
        step_pairs = rows[0]["images_per_sec"] / 2
        print(f"\ninput pipeline alone (two-view pairs/s, batch {batch}) vs the train step "
              f"above ({step_pairs:.1f} pairs/s), same run:")
        print("| preset | pipeline pairs/s | x train step |")
        print("|---|---|---|")
        for size in (32, 64, 128):
            d = copy.deepcopy(config.data)
            d.source, d.path, d.image_size, d.augment, d.cache = "npz", _PIPELINE.value, size, "", True
            rate = data_lib.benchmark_pipeline(d, batch, _PIPELINE_SECONDS.value)
            pipeline.append({"image_size": size, "pairs_per_sec": rate, "x_train_step": rate / step_pairs})
            print(f"| {size} px | {rate:.0f} | {rate / step_pairs:.0f}x |")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump({"forward_flops": fwd_flops, "matmul_peak_gflops": peak, "rows": rows,
                       "peak_rss_gib": peak_rss_gib,
                       "pipeline": pipeline}, f, indent=1)


if __name__ == "__main__":
    app.run(main, flags_parser=_common.parse_flags)
