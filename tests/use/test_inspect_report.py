"""The inspection report's pictures."""

import os

import numpy as np

from amdim_tf.use import inspect_report


def test_grid_titles_with_mathtext_and_missing_images_draw(tmp_path):
    """Issue 33 MED 8 and 10 in inspection's grids: `$...$` names are plain text and an
    image that could not be read back is an empty cell, not an error."""
    tiles = [np.zeros((8, 8, 3), np.uint8), None, np.full((8, 8, 3), 200, np.uint8)]
    out = inspect_report.tiles_png(str(tmp_path / "t.png"), tiles, ["a$\\frac$b", "gone", "c"], 2)
    assert os.path.getsize(out) > 0
