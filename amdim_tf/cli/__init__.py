"""What the absl tools in tools/ share: user errors as one line, flag and config-file errors.

The only module that knows about command lines; the rest of the library never
reads flags. Importing it (through `amdim_tf`) sets TF's environment before
TensorFlow loads.
"""

import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def user_errors():
    """Exception types that mean the user must fix something (no traceback for these)."""
    from amdim_tf.run.callbacks import NonFiniteLossError
    from amdim_tf.run.workdir import WorkdirConflictError

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


def _config_file_failure(error):
    """'<path>: <Type>: <message> (line N)' when `error` came from running a config file
    (config_flags runs it while parsing --config), else None."""
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) and cause not in chain:
        chain.append(cause)
    # The parser that runs the file (public class, not re-exported by config_flags);
    # tests/test_user_errors.py fails if an upgrade moves it.
    from ml_collections.config_flags.config_flags import ConfigFileFlagParser

    path = None
    for exc in chain:
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            if isinstance(frame.f_locals.get("self"), ConfigFileFlagParser):
                path = str(frame.f_locals.get("path", "?"))
    if path is None:
        return None
    root = chain[-1]  # what the config file raised
    file = os.path.abspath(path.split(":", 1)[0])
    lines = [
        n
        for frame, n in traceback.walk_tb(root.__traceback__)
        if os.path.abspath(frame.f_code.co_filename) == file
    ]
    message = (str(root).strip().splitlines() or [""])[0]
    line = f" (line {lines[-1]})" if lines else ""
    return f"{path}: {type(root).__name__}: {message}{line}"


def parse_flags(argv):
    """absl's flag parsing, with config-file and config-override errors as one line
    instead of a traceback."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except Exception as e:  # a config file may raise anything; the rest is re-raised
        failure = _config_file_failure(e)
        if failure is not None:
            fail(
                f"cannot load --config={failure}; fix that file or pass another, such as "
                "configs/amdim_cifar10.py",
                code=1,
            )
        if isinstance(e, flags.Error):
            fail(f"{e} (see --help)", code=1)
        if not isinstance(e, (KeyError, AttributeError, TypeError, ValueError)):
            raise
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        what = str(e).strip("\"'")
        fail(
            f"bad config override {overrides}: no such key or wrong type ({what}); "
            "keys and types are those of the --config file.",
            code=1,
        )


def load_config_flag(flag):
    """The value of a config_flags flag, checked by `config_lib.validate`; a one-line
    error if its file cannot be loaded (config_flags defers a missing file's error, which
    would otherwise surface deep in a run) or a value cannot work."""
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
    from amdim_tf import config_lib

    try:
        return config_lib.validate(config)
    except ValueError as e:
        fail(str(e), code=1)


def flags_value(flag):
    from absl import flags

    return (
        flags.FLAGS[flag.name].config_filename
        if hasattr(flags.FLAGS[flag.name], "config_filename")
        else "?"
    )
