"""The commands installed with the package (`amdim-train`, ...), one module each, and the
parts they share, one job each:

- `runner`: the one command skeleton (`command`) and its error policy (`run_main`, `fail`);
- `command_line`: the argv rewriting before absl parses it (preset names,
  --config.data.KEY=VALUE) and flag, config-file and config-override errors as one line;
- `shared_flags`: flags several commands define (--encoder, --config.data.KEY);
- `checks`: flag values checked before any work;
- `config_flag`: a --config flag read into a checked config.

Exit codes: 0 done; 2 a mistake the user must fix (a flag, a file, a config value, an
output path: an `amdim_tf.errors.UserError` or a missing file), printed as one line
`error: ...` (AMDIM_TF_TRACEBACK=1 shows its traceback too); 1 a bug, with its
traceback (Python's code for an uncaught exception; absl's --help and --helpshort exit
with 1 too, and amdim-benchmark when every row failed); 130 Ctrl-C; 143 SIGTERM (amdim-train, amdim-compare: preempted, a
checkpoint written). absl's own flag errors (a missing required flag, a bad value)
would exit with 1: `command_line.parse_flags` turns them into one line and exit 2.

The only package that knows about command lines; the rest of the library never
reads flags. Each `amdim_tf/cli/<name>.py` defines its flags at import and a
`main()` (the `amdim-<name>` entry point of pyproject.toml; `tools/<name>.py` is a
shim calling it). absl flags are process-global, so a process imports one command.
TF's environment (log level, oneDNN) is set by `amdim_tf/__init__.py`, which runs first.
"""

from amdim_tf.cli.checks import (
    check_flag,
    check_name_lengths,
    check_positive_finite,
    check_writable_dir,
    check_writable_file,
    parse_seeds,
)
from amdim_tf.cli.command_line import clear_data_overrides, data_overrides, parse_flags
from amdim_tf.cli.config_flag import load_config_flag
from amdim_tf.cli.runner import INTERRUPTED_EXIT_CODE, command, fail, run_command, run_main
from amdim_tf.cli.shared_flags import define_data_overrides, define_encoder_flags, encoder_path

__all__ = [
    "INTERRUPTED_EXIT_CODE",
    "check_positive_finite",
    "check_flag",
    "check_name_lengths",
    "check_writable_dir",
    "check_writable_file",
    "clear_data_overrides",
    "command",
    "data_overrides",
    "define_data_overrides",
    "define_encoder_flags",
    "encoder_path",
    "fail",
    "load_config_flag",
    "parse_flags",
    "parse_seeds",
    "run_command",
    "run_main",
]
