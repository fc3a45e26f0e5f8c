"""The shape of a run configuration, shared by every preset in `configs/`.

Configs hold primary values only (big_vision's lesson): the number of steps
per epoch, the warm-up end and the decay boundaries in steps are derived in
code from the data size and batch, so overriding the batch never leaves a
stale derived value behind.
"""

import ml_collections


def base_config():
    """Defaults of the official AMDIM CIFAR-10 run; presets override what differs."""
    c = ml_collections.ConfigDict()
    c.method = "amdim"
    c.seed = 1
    # tf.distribute strategy: "default" (one device), "mirrored" (all local GPUs) or
    # "multiworker" (hosts from TF_CONFIG); train.batch_size stays the global batch.
    c.distribute = "default"
    # Keras dtype policy: "auto" (mixed_bfloat16 where the device computes bf16 fast:
    # TPU, Ampere+ GPU, CPU with AVX512_BF16/AMX; else float32), "float32",
    # "mixed_bfloat16", or "mixed_float16" (older GPUs, with dynamic loss scaling).
    # NCE scores and BN statistics stay float32. A run records the resolved policy.
    c.precision = "auto"
    # XLA for the train step. Measured slower than TF's kernels on CPU; Keras's "auto"
    # would turn it on for a single GPU, so GPU runs may want --config.jit_compile=True.
    c.jit_compile = False

    c.model = ml_collections.ConfigDict()
    c.model.image_size = 32  # 32, 64 or 128
    c.model.ndf = 128  # base width
    c.model.n_rkhs = 1024  # embedding width of r1/r5/r7
    c.model.n_depth = 3  # residual units per block
    c.model.use_bn = False  # BN inside blocks (paper default: off)
    c.model.synchronized_bn = False
    # Mixture-based representations (§3.7, methods/amdim/objective.py): k components of r1,
    # each location taken by the component that predicts it best. 0 = plain AMDIM.
    c.model.n_mix = 0
    c.model.mix_hidden = 0  # hidden width of the mixture MLP (0 = n_rkhs)

    c.loss = ml_collections.ConfigDict()
    c.loss.tclip = 20.0  # soft clip of NCE scores
    c.loss.reg_coeff = 0.05  # logit penalty on raw scores
    # Entropy weight of the mixture's location assignment q (n_mix > 0); 1 makes the
    # objective the log-likelihood of a uniform mixture, -> 0 the best component.
    c.loss.mix_alpha = 1.0

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 2e-4
    c.optim.beta_1 = 0.8
    c.optim.beta_2 = 0.999
    c.optim.epsilon = 1e-8
    c.optim.weight_decay = 1e-5  # coupled L2, as PyTorch Adam
    c.optim.warmup_steps = 500
    c.optim.decay_epochs = (250, 280)
    c.optim.decay_factor = 0.2
    # "step": the paper's warm-up then x decay_factor at decay_epochs; "cosine": the same
    # warm-up then a cosine decay to 0 at the run's last step (epochs * steps_per_epoch).
    c.optim.schedule = "step"

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"  # npz | tfds | folder | tfrecord | digits
    c.data.name = "cifar10"  # TFDS name (source=tfds)
    c.data.path = ""  # npz file / image folder / tfrecord glob / tfds data_dir
    c.data.unlabeled_path = ""  # flat folder of unlabeled images (folder source)
    c.data.image_size = 32
    c.data.augment = ""  # '' = preset for image_size
    c.data.strict = False  # fail on a bad image file instead of skipping it
    # Decoded pixels allowed per image (2**25: an 8K frame, ~100 MB as uint8); a larger
    # one is skipped and counted from its header, before decoding (JPEGs count at the
    # reduced DCT scale they decode at). 0 = no bound.
    c.data.max_pixels = 2**25
    c.data.cache = True
    # A full shuffle of CIFAR: the JPEG copy is sorted by class, and a partial
    # buffer would fill batches with a few classes (weak negatives, biased probes).
    c.data.shuffle_buffer = 50000
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.num_classes = 10

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 200  # global batch
    c.train.epochs = 300
    c.train.steps_per_epoch = 0  # 0 = one pass over the training split
    c.train.eval_batch_size = 500
    c.train.steps_per_execution = 1  # train steps per tf.function call (callbacks see every Nth)
    c.train.eval_steps = 0  # 0 = whole eval split
    c.train.verbose = 1  # Keras progress bar (0 silent, 1 bar, 2 line per epoch)
    c.train.log_every_steps = 50  # TensorBoard scalars + metrics.jsonl
    c.train.checkpoint_every_steps = 500  # also at every epoch end and on SIGTERM
    c.train.keep_checkpoints = 3
    c.train.init_checkpoint = ""  # weights to start from when the workdir has no checkpoint
    c.train.log_view_pairs = 4  # augmented view pairs shown in TensorBoard at start
    c.train.max_seconds = 0  # wall-clock budget of this invocation (0 = none): checkpoint and stop
    # Online cosine kNN (k=20) of r1 at every epoch end: this many class-balanced eval
    # images scored against as many train images, logged as probe/eval_knn_acc (0 = off).
    c.train.knn_examples = 1000
    # TensorBoard images of the NCE score maps (and mixture assignments) every N steps; 0 = off.
    c.train.visualize_every_steps = 0
    return c


def make_tiny(c):
    """A seconds-long variant of any preset, for tests and smoke runs."""
    c.model.ndf = 8
    c.model.n_rkhs = 32
    c.model.n_depth = 1
    c.train.batch_size = 8
    c.train.epochs = 1
    c.train.steps_per_epoch = 3
    c.train.eval_batch_size = 16
    c.train.eval_steps = 2
    c.train.log_every_steps = 1
    c.train.checkpoint_every_steps = 2
    c.train.knn_examples = 0
    c.optim.warmup_steps = 2
    c.data.shuffle_buffer = 64
    c.precision = "float32"  # the same numbers on every machine
    return c


# Keras dtype policies `config.precision` may name; "auto" is resolved per machine by
# amdim_tf.run.build.resolve_precision (which must accept exactly these: a test checks it).
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
SCHEDULES = ("step", "cosine")

# (key, test of its value, what is allowed): the values that can be checked without the
# data. Data-dependent ones (a batch larger than the data set, labels out of range)
# are checked where the data is read (train.steps_per_epoch, data.load_npz).
_RULES = (
    ("train.batch_size", lambda v: v >= 1, "an integer >= 1 (the global batch)"),
    ("train.epochs", lambda v: v >= 1, "an integer >= 1"),
    (
        "train.steps_per_epoch",
        lambda v: v >= 0,
        "an integer >= 0 (0 = one pass over the training split)",
    ),
    ("train.eval_batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("train.eval_steps", lambda v: v >= 0, "an integer >= 0 (0 = the whole eval split)"),
    (
        "train.steps_per_execution",
        lambda v: v >= 1,
        "an integer >= 1 (train steps per tf.function call)",
    ),
    ("train.max_seconds", lambda v: v >= 0, "seconds >= 0 (0 = no time budget)"),
    ("optim.lr", lambda v: v > 0, "a learning rate > 0"),
    ("optim.warmup_steps", lambda v: v >= 0, "an integer >= 0"),
    ("optim.schedule", lambda v: v in SCHEDULES, f"one of {SCHEDULES}"),
    (
        "data.shuffle_buffer",
        lambda v: v > 1,
        "an integer > 1: a buffer of 1 does not shuffle, and a class-sorted copy (the "
        "CIFAR-10 JPEGs are) then gives batches of one class; use the training set size",
    ),
    ("precision", lambda v: v in PRECISIONS, f"one of {PRECISIONS}"),
)


def validate(config):
    """Raises a one-line ValueError naming the first value of `config` that cannot work.

    Checks what needs no data (the ranges in `_RULES`); returns `config`.
    """
    for key, ok, allowed in _RULES:
        section, value = config, None
        for part in key.split("."):
            section = value = section.get(part) if hasattr(section, "get") else None
        if value is None:  # a config without this key (an older run): nothing to check
            continue
        try:
            good = bool(ok(value))
        except TypeError:  # a value of the wrong type
            good = False
        if not good:
            raise ValueError(
                f"config.{key}={value!r} is not allowed; expected {allowed}. Fix the "
                f"config file or override it with --config.{key}=VALUE."
            )
    return config
