"""Benchmarks the AMDIM train step on this machine (images/s, GFLOP/s vs matmul peak).

Example (the figure in BUILD.md):
    python tools/benchmark.py --config=configs/amdim_cifar10.py --batch_sizes=200
Figures are medians after warm-up; compare ratios measured in one run, since
shared machines vary 2-6x between runs.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import amdim_tf  # noqa: E402,F401  (sets TF_ENABLE_ONEDNN_OPTS before TF loads)
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/amdim_cifar10.py",
                                          "Run configuration whose model is benchmarked.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["200"], "Global batch sizes to time.")
_STEPS = flags.DEFINE_integer("steps", 12, "Timed train steps per batch size (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, allocator warm-up).")
_JSON = flags.DEFINE_string("json", "", "Also write the results to this JSON file.")


def main(argv):
    del argv
    from amdim_tf import benchmark  # noqa: PLC0415
    from amdim_tf.build import build_encoder  # noqa: PLC0415

    config = _CONFIG.value
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
    m = config.model
    print(f"model {m.image_size}px ndf {m.ndf} n_rkhs {m.n_rkhs} depth {m.n_depth}; "
          f"forward {fwd_flops / 1e9:.3f} GFLOP/image; matmul peak {peak:.0f} GFLOP/s")
    print("| batch | images/s (both views) | step s | GFLOP/s | of matmul peak |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['images_per_sec']:.1f} | {r['step_seconds']:.3f} | "
              f"{r['gflops_per_sec']:.0f} | {100 * r['fraction_of_matmul_peak']:.0f}% |")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump({"forward_flops": fwd_flops, "matmul_peak_gflops": peak, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
