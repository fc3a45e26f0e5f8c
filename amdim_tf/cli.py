"""What the absl tools in tools/ share: user errors as one line, flag and config-file errors.

The only module that knows about command lines; the rest of the library never
reads flags. Importing it (through `amdim_tf`) sets TF's environment before
TensorFlow loads.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def user_errors():
    """Exception types that mean the user must fix something (no traceback for these)."""
    from amdim_tf.callbacks import NonFiniteLossError
    from amdim_tf.workdir import WorkdirConflictError

    return (FileNotFoundError, WorkdirConflictError, NonFiniteLossError, ValueError, KeyError)


def fail(message, code=2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def run_main(fn):
    """Calls fn(); a user error becomes 'error: <one line>' on stderr and exit code 2."""
    try:
        return fn()
    except user_errors() as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(msg)


def parse_flags(argv):
    """absl's flag parsing, with config-override errors as one line instead of a traceback."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{e} (see --help)", code=1)
    except (KeyError, AttributeError, TypeError, ValueError) as e:
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        what = str(e).strip("\"'")
        fail(
            f"bad config override {overrides}: no such key or wrong type ({what}); "
            "keys and types are those of the --config file.",
            code=1,
        )


def load_config_flag(flag):
    """The value of a config_flags flag, or a one-line error if its file cannot be loaded
    (config_flags loads lazily, so the failure would otherwise surface deep in a run)."""
    config = flag.value
    try:
        config.keys()
    except (OSError, ImportError, SyntaxError, AttributeError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        fail(
            f"cannot load --config={flags_value(flag)}: {lines[-1] if lines else e}; "
            "pass an existing file such as configs/amdim_cifar10.py",
            code=1,
        )
    return config


def flags_value(flag):
    from absl import flags

    return (
        flags.FLAGS[flag.name].config_filename
        if hasattr(flags.FLAGS[flag.name], "config_filename")
        else "?"
    )
