"""Pictures of what a trained run learned: score maps and mixture assignments as PNG files.

`visualize_run(workdir)` loads the run's model (`loader.open_run_model`: encoder and
objective, the mixture MLP that q needs), takes a few images (a folder, or a class-balanced sample of a split) and
writes the two figures of `run/score_maps.py` (Bachman et al. 2019 §3.7): the
per-location NCE score maps and, with n_mix > 0, the mixture assignments.
"""

import os

import numpy as np

from amdim_tf import config_lib
from amdim_tf.data import augment, samples
from amdim_tf.run import loader
from amdim_tf.run.score_maps import make_figures
from amdim_tf.use import report


def save_figures(model, images, preset, out_dir, seed=0, name_prefix="") -> list:
    """Writes OUT_DIR/[PREFIX_]score_maps.png (and [PREFIX_]assignments.png); returns the
    paths. Each file is written beside its final name and renamed into place."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, fig in make_figures(model, images, preset, seed).items():
        path = os.path.join(out_dir, f"{name_prefix}_{name}.png" if name_prefix else f"{name}.png")
        paths.append(report.save_png(fig, path))
    return paths


def folder_images(folder, preset, n=16, data=None):
    """The first n images of `folder` (sorted paths) as float32 [n, S, S, 3] in [0, 1].

    Read as a flat folder of unlabeled images by the folder source, as training and
    embed read it: what cannot be read or decoded is skipped and named; `data` (a `data`
    config section, default the base one) gives data.strict and data.max_pixels.
    """
    from amdim_tf import data as data_lib

    data = data_lib.Data((data or config_lib.base_config().data).to_dict())
    data.update({"source": "folder", "path": "", "unlabeled_path": folder})
    examples = data_lib.open_source(data).examples(data_lib.UNLABELED_SPLIT)
    ds = examples.ds.take(n).map(lambda x, y: augment.eval_pixels(examples.decode(x), preset))
    images = [image.numpy() for image in ds]
    if len(images) < 2:
        raise FileNotFoundError(
            f"{folder} holds {len(images)} readable images ({', '.join(data_lib.IMAGE_EXTENSIONS)}); "
            "score maps need at least 2 (the others are the negatives)."
        )
    return np.stack(images)


def visualize_run(
    workdir, out_dir="", which="latest", n=16, folder="", split="", seed=0, overrides=None
):
    """PNG figures (a) and (b) of a trained run, for n images; returns the paths.

    Images: the first n (sorted) of `folder`, else a class-balanced sample of `split`
    (default: the run's eval split) of the run's data. The files are
    OUT_DIR/<checkpoint name>_score_maps.png (and _assignments.png); default out_dir:
    WORKDIR/viz.
    """
    model, config, path = loader.open_run_model(workdir, which, overrides)
    preset = augment.preset_for(config.data.augment, config.data.image_size)
    if not folder and config.data.source == "folder":
        from amdim_tf import data as data_lib

        source = data_lib.open_source(config.data)
        if isinstance(source, data_lib.FolderSource) and source.is_flat():
            folder = config.data.path  # --config.data.path=DIR of unlabelled images
    if folder:
        images = folder_images(folder, preset, n, config.data)
    else:
        images, _ = samples.eval_pixels(
            config.data, split or config.data.eval_split, n, seed, balanced=True, batch=n
        )
    out_dir = out_dir or os.path.join(workdir, "viz")
    return save_figures(model, images, preset, out_dir, seed, name_prefix=os.path.basename(path))
