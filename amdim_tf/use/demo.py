"""The main job in one call (amdim-demo): pretrain, evaluate the frozen encoder against raw
pixels and an untrained encoder of the same shape, export it for serving (and, asked,
for edge runtimes), and record the result in WORKDIR/demo.json."""

import os
import time
from collections.abc import Callable

from amdim_tf import durable
from amdim_tf.data import augment
from amdim_tf.run.loader import untrained_encoder
from amdim_tf.run.train import train
from amdim_tf.use import edge, evaluate
from amdim_tf.use.export import export_encoder


def run_demo(
    config,
    workdir: str,
    formats=("savedmodel",),
    overwrite: bool = True,
    say: Callable[[str], None] = print,
) -> dict:
    """Trains `config` in `workdir` (resuming it), evaluates and exports the encoder.

    Args:
        formats: export formats (see `edge.parse_formats`); besides the SavedModel, each
            is checked against it.
        overwrite: replace a run of another config in `workdir`.
        say: where the progress lines and the table go.

    Returns:
        what demo.json holds: {"rows", "train_seconds", "total_seconds", "start"}, plus
        "export" (the SavedModel's directory, not recorded).
    """
    t0 = time.time()
    model, result = train(config, workdir, overwrite=overwrite)
    train_s = time.time() - t0
    encoders = {
        "AMDIM-trained encoder": model.encoder,
        "untrained encoder, same shape": untrained_encoder(config, seed=config.seed + 1),
    }
    rows = evaluate.evaluate_encoders(config, encoders, pixels=True, max_train=10000, k=20)
    say("")
    say(
        f"Frozen-encoder evaluation on {config.data.name} "
        f"({rows[0]['n_train']} train / {rows[0]['n_test']} test images):"
    )
    say(evaluate.format_table(rows))
    # TF Serving layout: BASE/VERSION; re-running the demo replaces version 1.
    export_path = os.path.join(workdir, "export", "1")
    preset = augment.preset_for(config.data.augment, config.data.image_size)
    export_encoder(model.encoder, export_path, preset, config.model.image_size, overwrite=True)
    edge_formats = [f for f in formats if f != "savedmodel"]
    if edge_formats:  # beside the SavedModel, each checked against it, each line said
        edge.export_edge_for_data(  # as its file is written (before any refusal is named)
            model.encoder, export_path, edge_formats, config.data, overwrite=True, report=say
        )
    summary = {
        "rows": rows,
        "train_seconds": train_s,
        "total_seconds": time.time() - t0,
        "start": result["start"],
    }
    durable.write_json(os.path.join(workdir, "demo.json"), summary, indent=1, sort_keys=False)
    return {**summary, "export": export_path}
