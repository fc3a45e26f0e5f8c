"""A small generated photo folder with the layout traps of a user's own images (issue 32):
loose images beside a sub-folder, a nested sub-folder, jpg/png/webp of mixed sizes, a
grayscale image, a corrupt and an empty file. Shared by tests/data and tests/e2e."""

import io
import os

import numpy as np
import tensorflow as tf

# What `make_photos` writes, relative to its root: the images that decode, and the two
# files named as images that do not (with the reason the reader gives).
GOOD_LOOSE = [f"img{i}.jpg" for i in range(6)] + ["gray.png", "wide.webp"]
GOOD_NESTED = [f"holiday/h{i}.jpg" for i in range(4)] + [
    "holiday/beach/b0.png",
    "holiday/beach/b1.png",
]
BAD = ["corrupt.jpg", "empty.png"]


def _image(h, w, seed, channels=3):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (1, 4, 4, channels)).astype(np.float32)
    return tf.cast(tf.image.resize(small, [h, w])[0], tf.uint8).numpy()


def _webp(image):
    from PIL import Image  # TF has no WebP encoder; Pillow is a test dependency already

    out = io.BytesIO()
    Image.fromarray(image).save(out, "WEBP", lossless=True)
    return out.getvalue()


def make_photos(root, copies=1) -> str:
    """Writes the trap folder under `root` (`copies` times each good image, as
    <stem>_<n>) and returns its path. Sizes vary from 24 to 64 px, one is grayscale."""
    root = str(root)
    sizes = [(40, 30), (64, 64), (33, 47), (48, 36), (24, 60), (64, 40), (32, 32), (36, 52)]
    for n in range(copies):
        suffix = f"_{n}" if copies > 1 else ""
        for i, rel in enumerate(GOOD_LOOSE + GOOD_NESTED):
            h, w = sizes[i % len(sizes)]
            stem, ext = os.path.splitext(rel)
            path = os.path.join(root, stem + suffix + ext)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            seed = 100 * n + i
            if ext == ".jpg":
                blob = tf.io.encode_jpeg(_image(h, w, seed)).numpy()
            elif rel == "gray.png":
                blob = tf.io.encode_png(_image(h, w, seed, channels=1)).numpy()
            elif ext == ".webp":
                blob = _webp(_image(h, w, seed))
            else:
                blob = tf.io.encode_png(_image(h, w, seed)).numpy()
            with open(path, "wb") as f:
                f.write(blob)
    with open(os.path.join(root, "corrupt.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
    open(os.path.join(root, "empty.png"), "wb").close()
    return root


def every_file(root, copies=1) -> dict:
    """{relative path: "good" | "bad"} of what `make_photos(root, copies)` wrote."""
    out = {}
    for n in range(copies):
        suffix = f"_{n}" if copies > 1 else ""
        for rel in GOOD_LOOSE + GOOD_NESTED:
            stem, ext = os.path.splitext(rel)
            out[stem + suffix + ext] = "good"
    out.update({b: "bad" for b in BAD})
    return out
