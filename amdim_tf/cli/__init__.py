"""The commands installed with the package (`amdim-train`, ...), one module each, and what
they share: how a command runs, user errors as one line, flag and config-file errors,
`--config` preset names.

The only package that knows about command lines; the rest of the library never
reads flags. Each `amdim_tf/cli/<name>.py` defines its flags at import and a
`main()` (the `amdim-<name>` entry point of pyproject.toml; `tools/<name>.py` is a
shim calling it). absl flags are process-global, so a process imports one command.
TF's environment (log level, oneDNN) is set by `amdim_tf/__init__.py`, which runs first.
"""

import os
import sys
import traceback

from amdim_tf.errors import first_line


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
        fail(first_line(e))


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
    message = first_line(str(root))
    line = f" (line {lines[-1]})" if lines else ""
    return f"{path}: {type(root).__name__}: {message}{line}"


def run_command(main, module_name: str, argv: list[str] | None = None) -> None:
    """Runs the absl `main(argv)` of the command module `module_name`.

    absl prints `__main__`'s docstring for --help and the flags of the module named
    sys.argv[0] for --helpshort; an installed command's `__main__` is the wrapper pip
    generates, so the command module lends it both.
    """
    from absl import app, flags

    main_module = sys.modules["__main__"]
    module = sys.modules.get(module_name, main_module)
    if module is not main_module:
        main_module.__doc__ = module.__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main, argv=argv, flags_parser=parse_flags)


# Commands that read a trained run's config instead of a config file (evaluate, embed,
# finetune, visualize) take --config.data.KEY=VALUE for other data. absl cannot define
# one flag per key of a config read at run time, so `parse_flags` takes these arguments
# out of argv into `_data_overrides` (config_lib.apply_overrides parses them), and
# a help-only flag of this name lists them under the command's own flags.
_DATA_FLAG = "config.data.KEY"
_data_overrides: list[str] = []


def define_data_overrides(module_name: str, help_string: str) -> None:
    """Declares that the command `module_name` takes --config.data.KEY=VALUE (repeatable)."""
    from absl import flags

    flags.DEFINE_string(_DATA_FLAG, None, help_string)
    # Listed by --helpshort with the command's flags, not this module's.
    owner = sys.argv[0] if module_name == "__main__" else module_name
    flags.FLAGS.register_key_flag_for_module(owner, flags.FLAGS[_DATA_FLAG])


def data_overrides() -> list[str]:
    """The --config.data.KEY=VALUE arguments of this command line, as "data.KEY=VALUE"."""
    return list(_data_overrides)


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
                "encoder is the run's), e.g. --config.data.source=folder --config.data.path=DIR",
                code=1,
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
            except ValueError as e:
                fail(f"--{name}: {e}", code=1)
            out.append(f"--{name}={resolved}" if value is not None else resolved)
            continue
        out.append(arg)
    return out


# -- flags shared by name (one name per concept across the commands) -------------------


def define_encoder_flags(module_name: str, help_string: str) -> None:
    """Declares --encoder (the encoder a command reads) and --workdir, its older name.

    Commands that read an encoder (evaluate, embed, export, finetune, visualize) name it
    --encoder; --workdir stays accepted there so existing command lines keep working
    (`encoder_path` refuses the two naming different things).
    """
    from absl import flags

    flags.DEFINE_string("encoder", None, help_string)
    flags.DEFINE_string("workdir", None, "The older name of --encoder (pass one of the two).")
    owner = sys.argv[0] if module_name == "__main__" else module_name
    for name in ("encoder", "workdir"):
        flags.FLAGS.register_key_flag_for_module(owner, flags.FLAGS[name])


def encoder_path(
    what: str = "a work directory, a .keras file or a SavedModel export", required: bool = True
) -> str | None:
    """The encoder of --encoder (or --workdir); a one-line error if two are given, or none
    and `required`."""
    from absl import flags

    encoder, workdir = flags.FLAGS["encoder"].value, flags.FLAGS["workdir"].value
    if encoder and workdir and encoder != workdir:
        fail(
            f"--encoder={encoder} and --workdir={workdir} name two encoders; pass one "
            "(--workdir is the older name of --encoder).",
            code=1,
        )
    if required and not (encoder or workdir):
        fail(f"pass --encoder=PATH: {what} (see --help).", code=1)
    return encoder or workdir


def check_flag(name: str, value, ok: bool, expected: str) -> None:
    """A one-line error for --name=value unless `ok`, before any work is done."""
    if not ok:
        fail(f"--{name}={value} is not allowed; expected {expected}.", code=1)


def parse_seeds(values: list[str], name: str = "seeds") -> tuple[int, ...]:
    """Distinct integer seeds >= 0 of a list flag; a one-line error otherwise."""
    shown = ",".join(values)
    try:
        seeds = tuple(int(v) for v in values)
    except ValueError:
        seeds = ()
    check_flag(name, shown, bool(seeds) and min(seeds) >= 0, "integers >= 0, e.g. 1,2,3")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    check_flag(
        name,
        shown,
        not repeated,
        f"distinct seeds ({','.join(map(str, repeated))} repeated; a repeated seed is the "
        "same run again, not another one)",
    )
    return seeds


# Longest file name most file systems take (ext4, APFS, NTFS: 255 bytes).
_NAME_MAX = 255


def check_name_lengths(flag: str, path: str) -> None:
    """A one-line error if a component of `path` is longer than a file name may be."""
    for part in os.path.abspath(path).split(os.sep):
        if len(os.fsencode(part)) > _NAME_MAX:
            fail(
                f"--{flag}={path}: the name {part[:20]}... is {len(os.fsencode(part))} bytes; "
                f"file names may be at most {_NAME_MAX} bytes, pass a shorter one.",
                code=1,
            )


def check_writable_dir(flag: str, path: str) -> None:
    """A one-line error, before any work, if `path` cannot be (or become) a directory we
    write into: a file in its place, a read-only or unwritable place, a name too long.

    Nothing is created: the nearest existing directory is tried with a temporary file.
    """
    import tempfile

    check_name_lengths(flag, path)
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        where = "is a file" if probe == os.path.abspath(path) else f"is under the file {probe}"
        fail(f"--{flag}={path} {where}, not a directory; pass a directory.", code=1)
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        fail(
            f"--{flag}={path}: cannot write in {probe} ({e.strerror}); pass a writable directory.",
            code=1,
        )


def parse_flags(argv):
    """absl's flag parsing, with --config preset names resolved, and config-file and
    config-override errors as one line instead of a traceback."""
    from absl import flags

    argv = _with_preset_files(argv)
    if _DATA_FLAG in flags.FLAGS:
        argv = _take_data_overrides(argv)
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # a config file may raise anything; the rest is re-raised
        failure = _config_file_failure(e)
        if failure is not None:
            fail(
                f"cannot load --config={failure}; fix that file or pass another: a preset "
                "name such as amdim_cifar10, or a file such as configs/amdim_cifar10.py",
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
            "pass a preset name such as amdim_cifar10 or an existing file such as "
            "configs/amdim_cifar10.py",
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
