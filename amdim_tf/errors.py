"""The error contract: `UserError` for what the user must fix, and how an error becomes
the one line a user reads (`first_line`, `cause`).

A command prints a `UserError` (or a missing file) as one line and exits with
`USER_ERROR_EXIT_CODE`; every other exception is a bug and keeps its traceback. With
`TRACEBACK_ENV=1` in the environment a user error shows its traceback too.

Bottom of the import order (no TensorFlow, no other project module), so every
layer that raises or reports an error uses the same rule.
"""

# 2, the Unix code for a refused command line (argparse, getopt): a script can tell a
# refusal from a crash, which Python reports with 1 and a traceback.
USER_ERROR_EXIT_CODE = 2
TRACEBACK_ENV = "AMDIM_TF_TRACEBACK"
# A foreign error quoted inside one of our messages keeps this much of its first line
# (TensorFlow's first lines can list every variable of a model).
CAUSE_LIMIT = 300


def first_line(error: BaseException | str, limit: int = 0) -> str:
    """The first non-empty line of `error`'s text, cut to `limit` characters (0 = whole).

    An exception without text gives its type's name (a bare `KeyError()` says
    "KeyError", not ""); TensorFlow's errors put the message first and the graph
    context after, so their first line is the message.
    """
    text = (error if isinstance(error, str) else str(error)).strip()
    if not text:
        return "" if isinstance(error, str) else type(error).__name__
    line = text.splitlines()[0]
    return line[:limit] if limit else line


def cause(error: BaseException | str) -> str:
    """`error` quoted inside another message: its first line, cut to `CAUSE_LIMIT`."""
    return first_line(error, limit=CAUSE_LIMIT)


class UserError(ValueError):
    """Something the user must fix (a flag, a file, a config value, an output path): the
    commands print its first line and exit with `USER_ERROR_EXIT_CODE`, without a
    traceback. Any other exception is a bug and keeps its traceback. A ValueError, so
    code that catches ValueError around a library call still catches it."""


class OutputExistsError(UserError, FileExistsError):
    """An output the user named is already there and would be replaced: pick another
    path or ask to overwrite. Still a FileExistsError for callers that catch that."""
