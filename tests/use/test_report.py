"""The one thumbnail grid: names drawn as plain text, missing images as empty cells."""

import numpy as np
import tensorflow as tf

from amdim_tf.use import report


def test_thumbnail_grid_draws_mathtext_names_and_missing_images(tmp_path):
    """Issue 33 MED 8 (a name like `a$\\frac$b` failed with "error: \\frac") and MED 10
    (an image gone since indexing): both draw, in rows of different lengths."""
    image = np.full((8, 8, 3), 120, np.uint8)
    cells = [[image, None, image], [image]]
    titles = [["a$\\frac$b", "missing one", "$x$"], ["c"]]
    frames = [["black", "red", None], ["green"]]
    out = report.thumbnail_grid(str(tmp_path / "g.png"), cells, titles, "$\\frac$", frames)
    png = tf.io.decode_png(tf.io.read_file(out)).numpy()
    assert png.shape[0] > 100 and png.shape[1] > 200
