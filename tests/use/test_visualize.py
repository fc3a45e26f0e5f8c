"""Score maps and mixture assignments: shapes, the overlay's colours, the TensorBoard
callback's cadence, and amdim-visualize on a tiny trained run."""

import os

import numpy as np
import pytest
from conftest import run_command


def tiny_model(config, n_mix):
    from amdim_tf.run.build import build_model

    config.model.n_mix = n_mix
    return build_model(config, steps_per_epoch=3, num_classes=10)


def raw_images(n=4, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, 32, 32, 3)).astype("uint8")


@pytest.mark.parametrize("n_mix", [0, 3])
def test_location_maps_shapes_and_q(tiny_config, n_mix):
    import tensorflow as tf

    from amdim_tf.data import augment
    from amdim_tf.run import score_maps

    model = tiny_model(tiny_config, n_mix)
    views = tf.stack([augment.eval_view(x, "cifar") for x in raw_images()])
    maps = score_maps.location_maps(model, views, views[::-1])
    k = max(n_mix, 1)
    assert maps["n_mix"] == n_mix
    assert maps["score7"].shape == (4, 7, 7) and maps["score5"].shape == (4, 5, 5)
    assert maps["q7"].shape == (4, 7, 7, k) and maps["q5"].shape == (4, 5, 5, k)
    np.testing.assert_allclose(maps["q7"].sum(-1), 1.0, rtol=1e-5)
    assert np.all(maps["score7"] <= 0) and np.all(np.isfinite(maps["score7"]))
    with pytest.raises(ValueError, match="at least 2"):
        score_maps.location_maps(model, views[:1], views[:1])


def test_overlay_tints_each_cell_with_its_component():
    from amdim_tf.run import score_maps

    q = np.zeros((7, 7, 2))
    q[:, :4, 0] = 1.0  # columns 0-3: component 0
    q[:, 4:, 1] = 1.0  # columns 4-6: component 1
    image = np.zeros((28, 28, 3))  # 4 pixels per cell
    out = score_maps.overlay_assignments(image, q, opacity=1.0)
    colours = score_maps.component_colours(2)
    np.testing.assert_allclose(out[5, 15], colours[0])  # cell column 3
    np.testing.assert_allclose(out[5, 16], colours[1])  # cell column 4


def test_make_figures_per_n_mix(tiny_config):
    from amdim_tf.run import score_maps

    figs = score_maps.make_figures(tiny_model(tiny_config, 0), raw_images(), "cifar")
    assert set(figs) == {"score_maps"}
    figs = score_maps.make_figures(tiny_model(tiny_config, 2), raw_images(), "cifar")
    assert set(figs) == {"score_maps", "assignments"}
    pixels = score_maps.figure_to_array(figs["assignments"])
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[-1] == 3


def _image_tags(logdir):
    import tensorflow as tf

    tags = []
    for name in os.listdir(logdir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
            tags += [(event.step, v.tag) for v in event.summary.value]
    return sorted(tags)


def test_callback_logs_images_at_its_cadence(tiny_config, tmp_path):
    """Two callbacks on one fit: every=2 logs both figures at steps 2 and 4, every=0 none."""
    import tensorflow as tf

    from amdim_tf.run import score_maps

    model = tiny_model(tiny_config, 2)
    writers = {every: tf.summary.create_file_writer(str(tmp_path / str(every))) for every in (0, 2)}
    callbacks = [
        score_maps.VisualizeCallback(raw_images(), "cifar", every, writer)
        for every, writer in writers.items()
    ]
    rng = np.random.RandomState(1)
    v1, v2 = rng.rand(2, 4, 32, 32, 3).astype("float32")
    ds = tf.data.Dataset.from_tensors(((v1, v2), np.arange(4, dtype="int32"))).repeat()
    model.fit(ds, epochs=1, steps_per_epoch=5, verbose=0, callbacks=callbacks)
    for writer in writers.values():
        writer.close()
    assert _image_tags(str(tmp_path / "0")) == []
    assert _image_tags(str(tmp_path / "2")) == [
        (step, tag) for step in (2, 4) for tag in ("viz/mixture_assignments", "viz/score_maps")
    ]


def _image_tags_of(path):
    import tensorflow as tf

    return [
        (e.step, v.tag) for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value
    ]


@pytest.mark.slow
def test_visualize_tool_on_a_trained_run(tiny_config, tmp_path):
    """A tiny n_mix = 2 run that logs the pictures when asked, then the tool: both PNGs
    from its latest checkpoint."""
    from amdim_tf.run import checkpoints, loader
    from amdim_tf.run.train import train
    from amdim_tf.use import visualize

    tiny_config.model.n_mix = 2
    tiny_config.train.verbose = 0
    tiny_config.train.log_view_pairs = 0
    tiny_config.train.visualize_every_steps = 2
    workdir = str(tmp_path / "run")
    model, _ = train(tiny_config, workdir)
    events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
    tags = [t for f in events for t in _image_tags_of(os.path.join(workdir, f))]
    assert (2, "viz/score_maps") in tags
    # The restored objective is the trained one (the mixture MLP that q needs).
    loaded, _, _ = loader.open_run_model(workdir)
    for a, b in zip(model.objective.weights, loaded.objective.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    out = str(tmp_path / "viz")
    r = run_command("visualize", f"--encoder={workdir}", "--n=4", f"--out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = os.path.basename(checkpoints.checkpoint_path(workdir, "latest"))
    for name in ("score_maps", "assignments"):  # --out is a directory, as in every command
        assert os.path.getsize(os.path.join(out, f"{ckpt}_{name}.png")) > 1000
    # A folder of images instead of the run's data.
    folder = tmp_path / "images"
    folder.mkdir()
    import tensorflow as tf

    for i, image in enumerate(raw_images(3)):
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))
    paths = visualize.visualize_run(workdir, str(tmp_path / "f"), folder=str(folder))
    assert paths == [str(tmp_path / "f" / f"{ckpt}_{n}.png") for n in ("score_maps", "assignments")]
    # The same folder through the data flags every command takes.
    data_paths = visualize.visualize_run(
        workdir, str(tmp_path / "g"), overrides=["data.source=folder", f"data.path={folder}"]
    )
    assert [os.path.basename(p) for p in data_paths] == [os.path.basename(p) for p in paths]
