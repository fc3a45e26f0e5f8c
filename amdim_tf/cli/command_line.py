"""The command line before absl parses it: preset names and --config.data.* arguments
rewritten, and flag, config-file and config-override errors as one line."""

import os
import re
import traceback

from amdim_tf.cli.runner import fail
from amdim_tf.errors import UserError, first_line

# Commands that read a trained run's config instead of a config file (evaluate, embed,
# finetune, visualize) take --config.data.KEY=VALUE for other data. absl cannot define
# one flag per key of a config read at run time, so `parse_flags` takes these arguments
# out of argv into `_data_overrides` (config_lib.apply_overrides parses them), and
# a help-only flag of this name lists them under the command's own flags.
DATA_FLAG = "config.data.KEY"
_data_overrides: list[str] = []


def data_overrides() -> list[str]:
    """The --config.data.KEY=VALUE arguments of this command line, as "data.KEY=VALUE"."""
    return list(_data_overrides)


def clear_data_overrides() -> None:
    """Forgets the --config.data.* arguments (for running another command in-process)."""
    _data_overrides.clear()


def _take_data_overrides(argv):
    """`argv` without its --config.* arguments, which go to `_data_overrides`; a key
    outside config.data is a one-line error (the encoder is the run's)."""
    out = list(argv[:1])
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--":
            out += argv[i:]
            break
        body = arg.lstrip("-")
        negated = body.startswith("noconfig.")
        if not arg.startswith("-") or not (body.startswith("config.") or negated):
            out.append(arg)
            continue
        key, eq, value = body.split(".", 1)[1].partition("=")
        if not key.startswith("data.") or key == "data.KEY":
            fail(
                f"{arg}: this command takes --config.data.KEY=VALUE only (other data; the "
                "encoder is the run's), e.g. --config.data.source=folder --config.data.path=DIR"
            )
        _data_overrides.append(f"{key}={value if eq else str(not negated)}")
    return out


def _with_preset_files(argv):
    """`argv` with each config-file flag's preset name (`--config=amdim_cifar10_cpu:parity`)
    replaced by the preset's file, the form config_flags reads (amdim_tf.presets)."""
    from absl import flags
    from ml_collections.config_flags.config_flags import ConfigFileFlagParser

    from amdim_tf import presets

    names = {
        name for name in flags.FLAGS if isinstance(flags.FLAGS[name].parser, ConfigFileFlagParser)
    }
    out = list(argv[:1])
    args = iter(argv[1:])
    for arg in args:
        name, eq, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name in names:
            if not eq:  # --config NAME
                out.append(arg)
                arg, value = next(args, ""), None
            try:
                resolved = presets.resolve(value if value is not None else arg)
            except (UserError, FileNotFoundError) as e:
                fail(f"--{name}: {first_line(e)}")
            out.append(f"--{name}={resolved}" if value is not None else resolved)
            continue
        out.append(arg)
    return out


def _config_file_failure(error):
    """'<path>: <Type>: <message> (line N)' when `error` came from running a config file
    (config_flags runs it while parsing --config), else None."""
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) and cause not in chain:
        chain.append(cause)
    # The parser that runs the file (public class, not re-exported by config_flags);
    # tests/cli/test_user_errors.py fails if an upgrade moves it.
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
    line = f" (line {lines[-1]})" if lines else ""
    return f"{path}: {type(root).__name__}: {first_line(root)}{line}"


def parse_flags(argv):
    """absl's flag parsing, with --config preset names resolved, and config-file and
    config-override errors as one line instead of a traceback."""
    from absl import flags

    argv = _with_preset_files(argv)
    if DATA_FLAG in flags.FLAGS:
        argv = _take_data_overrides(argv)
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # a config file may raise anything; the rest is re-raised
        failure = _config_file_failure(e)
        if failure is not None:
            fail(
                f"cannot load --config={failure}; fix that file or pass another: a preset "
                "name such as amdim_cifar10, or a file such as configs/amdim_cifar10.py"
            )
        if isinstance(e, flags.Error):
            fail(f"{e} (see --help)")
        if not isinstance(e, (KeyError, AttributeError, TypeError, ValueError)):
            raise
        fail(_override_failure(e, [a for a in argv[1:] if a.startswith("--config.")]))


def _override_failure(error, overrides):
    """One line naming the override that `error` (from config_flags) refused; all of them
    when the message does not say which."""
    # config_flags wraps ConfigDict's KeyError in an AttributeError, and a KeyError's
    # str() is the repr of its message (quotes escaped, newlines as '\n').
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    what = "; ".join(line.strip() for line in str(text).splitlines() if line.strip())
    names = re.findall(r"['\"](\w+)['\"]", what)
    culprits = [a for a in overrides if names and re.search(rf"\.{re.escape(names[0])}(=|$)", a)]
    return (
        f"bad config override {' '.join(culprits or overrides)}: no such key or wrong type "
        f"({what}); keys and types are those of the --config file."
    )
