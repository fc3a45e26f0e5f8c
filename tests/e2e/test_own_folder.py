"""The README's "your own images" commands on a folder kept as a user keeps it (issue 32):
loose photos beside a nested sub-folder, jpg/png/webp of mixed sizes, a grayscale image, a
corrupt and an empty file. Pretraining reads every image as unlabelled (probes and kNN
off, said so) and embed and inspect read the same set."""

import json
import logging
import os

import pytest
from conftest import run_command
from photo_folder import BAD, GOOD_LOOSE, GOOD_NESTED, make_photos

from amdim_tf import data as data_lib
from amdim_tf.run.run_config import load_run_config

pytestmark = pytest.mark.e2e


def test_train_embed_inspect_read_the_same_photos(tmp_path, caplog):
    photos = make_photos(tmp_path / "photos")
    wd, emb, report = (str(tmp_path / n) for n in ("run", "emb", "report"))
    with caplog.at_level(logging.WARNING):
        r = run_command(
            "train", "--config=amdim_folder:tiny", f"--config.data.path={photos}", f"--workdir={wd}"
        )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "online probes and the kNN monitor are off" in r.stdout
    layout = [m for m in caplog.messages if "sub-folder(s)" in m]
    assert len(layout) == 1 and "10 images beside 6 images in 1 sub-folder(s)" in layout[0]
    assert "completed" in r.stdout
    good = len(GOOD_LOOSE + GOOD_NESTED)
    assert data_lib.num_pretrain_examples(load_run_config(wd).data) == good

    r = run_command("embed", f"--encoder={wd}", f"--out={emb}", "--projector_examples=0")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(emb, "embed.json")) as f:
        summary = json.load(f)
    assert summary["split"] == "unlabeled" and summary["images"] == good
    assert sorted(os.path.basename(p) for p in summary["skipped_first"]) == sorted(BAD)

    r = run_command("inspect_data", f"--embeddings={emb}", f"--out={report}", "--top=0")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(report, "report.json")) as f:
        inspected = json.load(f)
    assert inspected["counts"]["images"] == {"unlabeled": good}
