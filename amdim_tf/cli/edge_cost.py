"""What each exported format costs: size, CPU latency and frozen accuracy of its features.

    amdim-export --workdir=DIR --format=savedmodel,litert,litert_int8,onnx
    amdim-edge-cost --workdir=DIR                    # reads DIR/export/1
    amdim-edge-cost --export=OUT/1 --config=configs/<preset>.py

Prints a Markdown table (amdim_tf/use/edge_cost.py): one row per file of the export,
with file size, median latency of one image at 1 and 2 threads, linear and kNN accuracy
of r1 on the run's data (a seeded sample of --max_train train images, the whole eval
split) with the delta against the SavedModel, and the max difference its export check
stored.
"""

import os

from absl import flags
from ml_collections import config_flags

from amdim_tf import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config whose `data` section gives the labelled data (default with --workdir: "
    "DIR/config.json).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "A directory written by amdim-train.")
_EXPORT = flags.DEFINE_string(
    "export",
    None,
    "SavedModel version (or base directory) with LiteRT / ONNX files beside it "
    "(default with --workdir: DIR/export).",
)
_MAX_TRAIN = flags.DEFINE_integer(
    "max_train", 10000, "Train images the classifiers are fitted on (seeded sample; 0 = all)."
)
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "Thread counts of the latency columns.")
_REPEATS = flags.DEFINE_integer("repeats", 50, "Timed calls per latency figure (median).")
_JSON = flags.DEFINE_string("json_out", None, "Also write the rows to this JSON file.")


def _run():
    workdir = _WORKDIR.value
    config_given = flags.FLAGS["config"].present
    if not (workdir or (config_given and _EXPORT.value)):
        cli.fail("pass --workdir=DIR, or --export=DIR --config=configs/<preset>.py.")
    threads = [int(n) for n in _THREADS.value if n.strip().isdigit()]
    shown = ",".join(_THREADS.value)
    ok = len(threads) == len(_THREADS.value) and threads and min(threads) >= 1
    cli.check_flag("threads", shown, bool(ok), "integers >= 1, e.g. 1,2")

    from amdim_tf import durable
    from amdim_tf.data import samples
    from amdim_tf.run.run_config import load_run_config
    from amdim_tf.use import edge_cost

    config = cli.load_config_flag(_CONFIG) if config_given else None
    config = config or load_run_config(workdir)
    export_dir = _EXPORT.value or os.path.join(workdir, "export")
    data = config.data
    train = samples.eval_pixels(data, data.train_split, _MAX_TRAIN.value, 0, uint8=True)
    test = samples.eval_pixels(data, data.eval_split, seed=0, uint8=True)
    rows = edge_cost.cost_report(export_dir, train, test, threads, _REPEATS.value)
    print(edge_cost.format_table(rows))
    if _JSON.value:
        durable.write_json(_JSON.value, rows, indent=1, sort_keys=False, flag="--json")


main = cli.command(__name__, _run)


if __name__ == "__main__":
    main()
