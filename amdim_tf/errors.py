"""How an error becomes the one line a user reads: `first_line`.

Bottom of the import order (no TensorFlow, no other project module), so every
layer that turns an exception into a message uses the same rule.
"""


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


class UserError(ValueError):
    """Something the user must fix (a flag, a file, a config value): the commands print its
    first line and exit, without a traceback. Any other exception is a bug and keeps its
    traceback. A ValueError, so code that catches ValueError around a library call still
    catches it."""
