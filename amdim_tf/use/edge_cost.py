"""What each exported format costs: file size, CPU latency, and frozen accuracy of its features.

For a SavedModel version with LiteRT / ONNX files beside it (`edge.export_edge`), one
row per format: size on disk, median latency of one image (batch 1) in the format's own
runtime at 1 and 2 threads, and the frozen-feature protocol of `evaluate.py` (logistic
regression and cosine kNN on r1) with every format's features computed on the same
images: a seeded sample of the train split and the whole eval split. The accuracy delta
of a row is against the SavedModel's (float32) row; the max difference is the one its
export check measured and stored. The int8 variant is the row that says what
post-training quantisation costs.

Latency is a median over repeated runs after warm-up, on whatever shares the CPU: a
comparison between formats on one machine at one time, not an absolute figure.
"""

import os
import time
from collections.abc import Sequence

import numpy as np

from amdim_tf.run import loader
from amdim_tf.use import edge, evaluate

SAVEDMODEL = "savedmodel"


def dir_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def latency_seconds(path: str, image: np.ndarray, threads: int, repeats: int = 50) -> float:
    """Median seconds of one call on one uint8 image [1, S, S, 3] (after 5 warm-up calls)."""
    run = edge.runner(path, num_threads=threads)
    for _ in range(5):
        run(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _r1(outputs):
    r1 = np.asarray(outputs["r1"], np.float32)
    return r1.reshape(len(r1), -1)  # [N, D]


def cost_report(
    export_dir: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    threads: Sequence[int] = (1, 2),
    repeats: int = 50,
    k: int = 20,
    max_iter: int = 300,
) -> list[dict]:
    """One row per format of the export at `export_dir` (SavedModel first).

    Args:
        export_dir: a SavedModel version with checked edge files (`edge.edge_files`).
        train, test: (uint8 images [N, S, S, 3], int labels [N]), e.g. from
            `samples.eval_pixels(..., uint8=True)`; every format sees exactly these images.
        threads: thread counts of the latency columns (LiteRT and ONNX runtimes).
        repeats: timed calls per latency figure (the median is reported).
        k, max_iter: of the kNN and the logistic regression (`evaluate.evaluate_features`).

    Returns:
        rows {"format", "file", "bytes", "linear_acc", "knn_acc", "latency_ms" {threads:
        ms} (LiteRT / ONNX only), "max_abs", "max_rel" (r1, from the export check),
        "n_train", "n_test"}; accuracies of the SavedModel row are the reference.
    """
    export_dir = loader.resolve_export_dir(export_dir)
    files = edge.edge_files(export_dir)
    rows = []

    def evaluate_row(row, encode):
        feats = [(_r1(encode(x)), np.asarray(y)) for x, y in (train, test)]
        row.update(evaluate.evaluate_features(feats[0], feats[1], k, max_iter))
        row.update(n_train=len(train[1]), n_test=len(test[1]))
        rows.append(row)

    evaluate_row(
        {"format": SAVEDMODEL, "file": ".", "bytes": dir_bytes(export_dir)},
        lambda x: edge.saved_model_outputs(export_dir, x, batch=256),
    )
    for fmt in edge.EDGE_FORMATS:
        if fmt not in files:
            continue
        meta = files[fmt]
        row = {
            "format": fmt,
            "file": meta["file"],
            "bytes": meta["bytes"],
            "max_abs": meta["check"]["r1"]["max_abs"],
            "max_rel": meta["check"]["r1"]["max_rel"],
            "latency_ms": {
                n: 1e3 * latency_seconds(meta["path"], test[0][:1], n, repeats) for n in threads
            },
        }
        run = edge.runner(meta["path"])
        evaluate_row(row, lambda x, run=run: edge.run_batched(run, x, batch=256))
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (accuracy deltas against the SavedModel row)."""
    ref = rows[0]
    threads = sorted({n for r in rows for n in r.get("latency_ms", {})})
    head = ["format", "file", "size"]
    head += [f"latency/image, {n} thread{'s' if n > 1 else ''}" for n in threads]
    head += ["linear acc (delta)", "kNN acc (delta)", "max abs diff r1 (rel)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["format"], f"`{r['file']}`", f"{r['bytes'] / 1e6:.2f} MB"]
        lat = r.get("latency_ms", {})
        cells += [f"{lat[n]:.2f} ms" if n in lat else "n/a" for n in threads]
        for key in ("linear_acc", "knn_acc"):
            delta = "" if r is ref else f" ({100 * (r[key] - ref[key]):+.2f})"
            cells.append(f"{100 * r[key]:.2f}%{delta}")
        cells.append("reference" if r is ref else f"{r['max_abs']:.2g} ({r['max_rel']:.2g})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
