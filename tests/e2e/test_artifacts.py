"""Every `.keras` file the project writes loads with `keras.saving.load_model` after only
`import amdim_tf`, in a fresh process, and gives what the writer computed (issue 20 trap 3).

`tests/fixtures/encoder_529c7cc.keras` was written by `amdim_tf.save_encoder` at commit
529c7cc (before the code moved into layers: its Keras "module" fields name
`amdim_tf.backbone` and `amdim_tf.encoders.amdim`), a tiny AMDIM encoder (ndf=4,
n_rkhs=16, n_depth=1, seed 0); `encoder_529c7cc.npz` holds two uint8 images and the r1
that commit's code computed from them.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from conftest import fresh_env, tiny_run_config

import amdim_tf
from amdim_tf.run import loader
from amdim_tf.use import finetune

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def test_every_keras_file_loads_in_a_fresh_process_after_import_amdim_tf(tmp_path):
    encoder = loader.untrained_encoder(tiny_run_config())
    enc_path = amdim_tf.save_encoder(encoder, str(tmp_path / "encoder.keras"))
    names = tuple(f"class {i}" for i in range(3))
    model = finetune.build_classifier(loader.untrained_encoder(tiny_run_config()), 3)
    classifier = finetune.pixel_classifier(model, names, "cifar")
    clf_path = str(tmp_path / "classifier.keras")
    loader.save_keras_atomic(classifier, clf_path)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    want_r1 = loader.load_encoder(enc_path, include_preprocessing=True)(pixels)["r1"].numpy()
    want_probs = classifier(pixels).numpy()

    script = textwrap.dedent(f"""
        import json
        import numpy as np
        import amdim_tf  # the only project import
        import keras
        pixels = np.load("pixels.npy")
        enc = keras.saving.load_model({enc_path!r})
        clf = keras.saving.load_model({clf_path!r})
        old = keras.saving.load_model({os.path.join(FIXTURES, "encoder_529c7cc.keras")!r})
        fixture = np.load({os.path.join(FIXTURES, "encoder_529c7cc.npz")!r})
        np.save("r1.npy", enc(pixels)["r1"].numpy())
        np.save("probs.npy", clf(pixels).numpy())
        np.save("old_r1.npy", old(fixture["pixels"])["r1"].numpy())
        print(json.dumps([type(m).__name__ for m in (enc, clf, old)] + [list(clf.class_names)]))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=fresh_env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    kinds = json.loads(proc.stdout.strip().splitlines()[-1])
    assert kinds == ["PixelEncoder", "PixelClassifier", "PixelEncoder", list(names)]
    np.testing.assert_allclose(np.load(tmp_path / "r1.npy"), want_r1, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), want_probs, atol=1e-5)
    with np.load(os.path.join(FIXTURES, "encoder_529c7cc.npz")) as fixture:
        old_r1 = fixture["r1"].reshape(len(fixture["pixels"]), -1)
    np.testing.assert_allclose(np.load(tmp_path / "old_r1.npy"), old_r1, atol=1e-5)
