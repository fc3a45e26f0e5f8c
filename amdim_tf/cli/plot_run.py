"""Probe accuracy of one run against wall time, as a PNG (the README's learning curve),
and its label-free health monitors beside the kNN accuracy.

    amdim-plot-run --workdir=DIR [--out=DIR]
        # -> OUT/probe_curves.png, and OUT/health_curves.png when the run logged health/

Reads DIR/metrics.jsonl and plots the online linear probe on training batches
(probe/linear_acc, augmented views, Keras' running mean over the epoch), on
the eval split (probe/eval_linear_acc, once per epoch) and the online cosine kNN
(probe/eval_knn_acc, when train.knn_examples > 0) against active wall time
(gaps over 5 minutes, i.e. the run was stopped and resumed, are removed).
Needs no TensorFlow. --out is a directory, as in every command; a path ending in
.png (the older form) names the file itself.
"""

import json
import os

from absl import flags

from amdim_tf import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A directory written by amdim-train.")
_OUT = flags.DEFINE_string(
    "out",
    None,
    "Directory of probe_curves.png (default WORKDIR); a path ending in .png names the file.",
)
flags.mark_flags_as_required(["workdir"])


def _run():
    out = _OUT.value or _WORKDIR.value
    cli.check_writable_dir("out", os.path.dirname(out) if out.lower().endswith(".png") else out)

    from amdim_tf.use import report as plots

    metrics = os.path.join(_WORKDIR.value, "metrics.jsonl")
    if not os.path.exists(metrics):
        raise FileNotFoundError(
            f"{metrics} does not exist: --workdir must be a directory written by amdim-train"
        )
    series = {
        "train batches (online probe)": plots.curves_from_metrics(metrics, plots.TRAIN_LINEAR_KEY),
        "eval split (online probe)": plots.curves_from_metrics(metrics, plots.EVAL_LINEAR_KEY),
        "eval split (cosine kNN of r1)": plots.curves_from_metrics(metrics, plots.EVAL_KNN_KEY),
    }
    title = os.path.basename(os.path.abspath(_WORKDIR.value))
    config_path = os.path.join(_WORKDIR.value, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            c = json.load(f)
        title = f"{c.get('method', 'amdim').upper()} on {c['data'].get('name') or c['data']['source']}: {title}"
    out = _OUT.value or _WORKDIR.value
    if not (out.lower().endswith(".png") and not os.path.isdir(out)):
        out = os.path.join(out, "probe_curves.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    plots.plot_probe_curves(series, out, title, ylabel="accuracy")
    last = {
        k: (f"{100 * v[-1][1]:.1f}% at {v[-1][0]:.0f} s" if v else "no points")
        for k, v in series.items()
    }
    print(f"wrote {out} ({'; '.join(f'{k}: {v}' for k, v in last.items())})")
    health = plots.plot_health_curves(
        metrics, os.path.join(os.path.dirname(os.path.abspath(out)), "health_curves.png"), title
    )
    if health:
        print(f"wrote {health} (the label-free health monitors beside the kNN accuracy)")


main = cli.command(__name__, _run, quiet=False)


if __name__ == "__main__":
    main()
