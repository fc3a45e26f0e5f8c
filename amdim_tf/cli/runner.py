"""How a command runs: the one skeleton of every `amdim-*` command and its error policy.

A `UserError` or a missing file prints one line `error: ...` on stderr and exits with
`errors.USER_ERROR_EXIT_CODE` (with AMDIM_TF_TRACEBACK=1 its traceback comes first);
Ctrl-C prints one line and exits with 130; every other exception is a bug and keeps
its traceback (exit 1, Python's).
"""

import os
import signal
import sys
import traceback
from collections.abc import Callable

from amdim_tf.errors import TRACEBACK_ENV, USER_ERROR_EXIT_CODE, UserError, first_line

# 128 + SIGINT, what a shell reports for a Ctrl-C (amdim-train exits with it too).
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT


def fail(message: str, code: int = USER_ERROR_EXIT_CODE):
    """Prints `error: message` on stderr and exits with `code`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def show_user_tracebacks() -> bool:
    """Whether AMDIM_TF_TRACEBACK asks for the traceback of user errors too."""
    return os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


def run_main(fn: Callable[[], object], interrupted: str = "interrupted (Ctrl-C)"):
    """Calls fn() under the error policy of the module docstring."""
    try:
        return fn()
    except Exception as e:
        if not isinstance(e, (UserError, FileNotFoundError)):
            raise
        if show_user_tracebacks():
            traceback.print_exc()
        fail(first_line(e))
    except KeyboardInterrupt:
        if show_user_tracebacks():
            traceback.print_exc()
        fail(interrupted, code=INTERRUPTED_EXIT_CODE)


def command(
    module_name: str,
    body: Callable[[], object],
    quiet: bool = True,
    interrupted: str = "interrupted (Ctrl-C)",
) -> Callable[[list[str] | None], None]:
    """The `main(argv=None)` of the command module `module_name`: parses its flags, refuses
    arguments that are not flags, then runs `body()` (flags in, one library call out)
    under the error policy. `quiet` hides absl's INFO lines (TF's chatter hides the
    progress bars); `interrupted` is the line printed on Ctrl-C."""

    def absl_main(argv):
        from absl import logging

        if quiet:
            logging.set_verbosity(logging.WARNING)
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; every option is a --flag (see --help).")
        run_main(body, interrupted)

    def main(argv: list[str] | None = None) -> None:
        run_command(absl_main, module_name, argv)

    name = module_name.rsplit(".", 1)[-1]
    main.__doc__ = (
        f"The `amdim-{name.replace('_', '-')}` command (also `python -m amdim_tf.cli.{name}`)."
    )
    return main


def run_command(main, module_name: str, argv: list[str] | None = None) -> None:
    """Runs the absl `main(argv)` of the command module `module_name`.

    absl prints `__main__`'s docstring for --help and the flags of the module named
    sys.argv[0] for --helpshort; an installed command's `__main__` is the wrapper pip
    generates, so the command module lends it both.
    """
    from absl import app, flags

    from amdim_tf.cli.command_line import parse_flags

    main_module = sys.modules["__main__"]
    module = sys.modules.get(module_name, main_module)
    if module is not main_module:
        main_module.__doc__ = module.__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main, argv=argv, flags_parser=parse_flags)
