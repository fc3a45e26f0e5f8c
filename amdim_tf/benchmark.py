"""Throughput measurements: the train step on synthetic data, the machine's matmul peak, FLOPs.

Figures on shared machines are noisy (2-6x here), so every figure is a median
over steps after warm-up, and the numbers meant to be compared (step vs peak,
pipeline vs step) are measured side by side in one process.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from amdim_tf.build import build_model


class StepTimer(keras.callbacks.Callback):
    """Wall time of every train batch (Keras syncs on the logs at batch end)."""

    def __init__(self):
        super().__init__()
        self.times = []
        self._t0 = None

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if logs:
            float(next(iter(logs.values())))  # force the step to finish
        self.times.append(time.perf_counter() - self._t0)


def train_step_throughput(config, batch_size, steps=12, warmup=3):
    """Median encoder images/s of the train step (both views counted) on synthetic data.

    Returns dict(images_per_sec, step_seconds, steps_timed).
    """
    keras.utils.set_random_seed(0)
    size = config.model.image_size
    model = build_model(config, steps_per_epoch=1000, num_classes=10)
    rng = np.random.RandomState(0)
    x1 = rng.randn(batch_size, size, size, 3).astype("float32")
    x2 = rng.randn(batch_size, size, size, 3).astype("float32")
    y = rng.randint(0, 10, batch_size).astype("int32")
    ds = tf.data.Dataset.from_tensors(((x1, x2), y)).repeat()
    timer = StepTimer()
    model.fit(ds, epochs=1, steps_per_epoch=steps + warmup, verbose=0, callbacks=[timer])
    step = float(np.median(timer.times[warmup:]))
    return {"images_per_sec": 2 * batch_size / step, "step_seconds": step,
            "steps_timed": len(timer.times) - warmup}


def matmul_peak_gflops(n=2048, repeats=10):
    """Median float32 GFLOP/s of an n x n matmul: this machine's practical compute ceiling."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda a, b: tf.matmul(a, b))
    f(a, b).numpy()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).numpy()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times)) / 1e9


def encoder_forward_flops(encoder, batch_size=1):
    """Multiply-adds x 2 of one encoder forward pass, counted by TF's graph profiler
    (the registered FLOP statistics of Conv2D/MatMul ops), per `batch_size` images."""
    size = encoder.image_size
    fn = tf.function(lambda x: encoder(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([batch_size, size, size, 3], tf.float32))
    from tensorflow.python.framework import convert_to_constants  # noqa: PLC0415
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts)
    return int(prof.total_float_ops)
