"""The shape of a run configuration, shared by every preset (amdim_tf/presets/), its
checks (`validate`), and the one parser of dotted-key overrides (`apply_overrides`).

Configs hold primary values only (big_vision's lesson): the number of steps
per epoch, the warm-up end and the decay boundaries in steps are derived in
code from the data size and batch, so overriding the batch never leaves a
stale derived value behind.
"""

import ast
import difflib
import math
from collections.abc import Iterable, Mapping

import ml_collections

from amdim_tf.errors import UserError


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
    c.data.unlabeled_path = ""  # folder of unlabeled images (folder source)
    # Folder source: "none" reads every image under data.path (sub-folders included) as
    # unlabelled; "folders" reads its sub-directories as the classes (data/sources/folder.py).
    c.data.labels = "none"
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
    c.train.verbose = 1  # 0 silent, 1 live (a line every 30 s in a log file), 2 a line per epoch
    c.train.log_every_steps = 50  # TensorBoard scalars + metrics.jsonl
    c.train.checkpoint_every_steps = 500  # also at every epoch end and on SIGTERM
    c.train.keep_checkpoints = 3
    c.train.init_checkpoint = ""  # weights to start from when the workdir has no checkpoint
    c.train.log_view_pairs = 4  # augmented view pairs shown in TensorBoard at start
    c.train.max_seconds = 0  # wall-clock budget of this invocation (0 = none): checkpoint and stop
    # Online cosine kNN (k=20) of r1 at every epoch end: this many class-balanced eval
    # images scored against as many train images, logged as probe/eval_knn_acc (0 = off).
    c.train.knn_examples = 1000
    # Label-free health of r1 at every epoch end (run/health.py): effective rank, alignment,
    # uniformity, per-dimension spread of this many seeded training images (0 = off), as
    # health/* in TensorBoard and metrics.jsonl. The collapse alarm fires when the
    # effective rank falls under max(2, collapse_rank_fraction * min(images, n_rkhs));
    # stop_on_collapse then also stops the run after that epoch's checkpoint.
    c.train.health_examples = 512
    c.train.collapse_rank_fraction = 0.01
    c.train.stop_on_collapse = False
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
    c.train.health_examples = 0
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
    (
        "train.keep_checkpoints",
        lambda v: v >= 1,
        "an integer >= 1 (the latest checkpoints kept; resuming needs one)",
    ),
    ("train.health_examples", lambda v: v == 0 or v >= 2, "0 (off) or an integer >= 2"),
    ("train.collapse_rank_fraction", lambda v: 0 <= v <= 1, "a fraction of n_rkhs in [0, 1]"),
    # inf > 0 holds, and an inf lr fails only at the second step.
    ("optim.lr", lambda v: v > 0 and math.isfinite(v), "a learning rate > 0, finite"),
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
            raise UserError(
                f"config.{key}={value!r} is not allowed; expected {allowed}. Fix the "
                f"config file or override it with --config.{key}=VALUE."
            )
    return config


def parse_override(item: str) -> tuple[str, str]:
    """(dotted key, raw value) of "KEY=VALUE"; the value may itself hold "=" signs."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"{item!r} is not KEY=VALUE, e.g. data.path=DIR")
    return key.strip(), raw


def override_keys(overrides: Mapping[str, object] | Iterable[str]) -> list[str]:
    """The dotted keys of `overrides` (a mapping or "KEY=VALUE" strings), in order."""
    if isinstance(overrides, Mapping):
        return list(overrides)
    return [parse_override(item)[0] for item in overrides]


def _typed(raw, current):
    """The value of a command-line VALUE for a key that now holds `current`: verbatim for
    a string key (data.path=123 stays a path), else a Python literal (64, 1e-3, (10, 20),
    True); what does not parse stays text, for the type check to refuse."""
    if isinstance(current, str):
        return raw
    if isinstance(current, bool) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"  # absl's spelling of booleans, as --config.* takes
    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        return raw


def _no_key(key, section, what):
    keys = sorted(section) if isinstance(section, ml_collections.ConfigDict) else []
    last = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(last, keys, n=1)
    hint = f" (did you mean {key[: -len(last)] + close[0]!r}?)" if close else ""
    return UserError(f"no key {key!r} in {what}{hint}; keys there: {', '.join(keys) or 'none'}")


def apply_overrides(
    config: ml_collections.ConfigDict,
    overrides: Mapping[str, object] | Iterable[str],
    allowed_prefixes: tuple[str, ...] = (),
    what: str = "the config",
) -> ml_collections.ConfigDict:
    """Sets dotted keys of `config` in place, in order, and returns it: the one parser of
    config overrides (every command's --config.KEY=VALUE that is not config_flags' own,
    compare's --set, the library's `overrides` arguments).

    Args:
        config: the config to change (locked or not: a key it lacks is refused either way).
        overrides: {"data.path": value} with values already typed, or "KEY=VALUE"
            strings whose VALUE is read by the key's current type (see `_typed`).
        allowed_prefixes: if given, every key must start with one of them ("data.").
        what: how errors name `config` ("the cpc config", "a trained run's config").

    Raises a one-line ValueError quoting the override for an unknown key (with the
    keys there and the closest one), a key outside `allowed_prefixes`, a section
    given a value, or a value of the wrong type (the ConfigDict's check: an int into a
    float key is fine, a string into an int key is not). A failed override changes
    nothing.
    """
    if isinstance(overrides, Mapping):
        pairs = [(key, value, False) for key, value in overrides.items()]
    else:
        pairs = [(*parse_override(item), True) for item in overrides]
    for key, value, from_text in pairs:
        if allowed_prefixes and not key.startswith(tuple(allowed_prefixes)):
            only = ", ".join(f"{p}*" for p in allowed_prefixes)
            raise UserError(f"cannot override {key!r} of {what}: only {only} keys may change here")
        *parents, name = key.split(".")
        section = config
        for part in parents:
            if not isinstance(section, ml_collections.ConfigDict) or part not in section:
                raise _no_key(key, section, what)
            section = section[part]
        if not isinstance(section, ml_collections.ConfigDict) or name not in section:
            raise _no_key(key, section, what)
        current = section[name]
        if isinstance(current, ml_collections.ConfigDict):
            raise UserError(
                f"{key!r} is a section of {what}; override one of its keys, e.g. "
                f"{key}.{sorted(current)[0]}=VALUE"
            )
        if from_text:
            value = _typed(value, current)
        try:
            config.update_from_flattened_dict({key: value})
        except (TypeError, ValueError, KeyError):
            raise UserError(
                f"{key}={value!r} is not allowed: {what} takes a value of type "
                f"{type(current).__name__} there (now {current!r})"
            ) from None
    return config


def with_data_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, object] | Iterable[str]
) -> ml_collections.ConfigDict:
    """A copy of a trained run's `config` that reads other data (transfer): only `data.*`
    keys change, since the encoder and its size are the run's checkpoint's."""
    config = config.copy_and_resolve_references()
    apply_overrides(
        config,
        overrides or {},
        allowed_prefixes=("data.",),
        what="a trained run's config (the encoder is the run's)",
    )
    if int(config.data.image_size) != int(config.model.image_size):
        raise UserError(
            f"data.image_size={config.data.image_size} differs from the encoder's "
            f"{config.model.image_size} px; evaluate at the size the encoder was trained for "
            "(every source resizes to data.image_size)."
        )
    return config
