"""Writing a work directory safely: atomic JSON, appended JSON lines, storage errors.

Every file a run writes goes through here or through TensorFlow (checkpoints,
summaries); what goes wrong while writing it (a full disk, a read-only file system, a
file in the way) becomes one `WorkdirError` line naming the path, its free space and
what to do, instead of a traceback.
"""

import errno
import json
import os
import re
import shutil

import tensorflow as tf
from absl import logging


class WorkdirError(ValueError):
    """The work directory cannot be written: a file in its place, read-only, disk full."""


# errno -> what to do about it, for errors writing a work directory.
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full; free space or use a --workdir on another disk, then rerun "
    "the same command to resume",
    errno.EDQUOT: "the disk quota is exceeded; free space or use a --workdir on another disk, "
    "then rerun the same command to resume",
    errno.EROFS: "the file system is read-only; use a writable --workdir",
    errno.EACCES: "permission denied; make it writable or use another --workdir",
    errno.EPERM: "the operation is not permitted (read-only or immutable); make it writable "
    "or use another --workdir",
    errno.ENOTDIR: "a file is in the way of a directory; pass a directory as --workdir",
    errno.EEXIST: "a file is in the way of a directory; pass a directory as --workdir",
}
# The same conditions as TensorFlow reports them (checkpoint and summary writes).
_TF_MESSAGES = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
    "Operation not permitted": errno.EPERM,
    "Not a directory": errno.ENOTDIR,
}
# A path in a TF message: absolute, and not a device name such as "/job:localhost/..."
# (TF prefixes op errors with the device; a path never holds a colon right after its
# first component in this project's work directories).
_TF_PATH = re.compile(r"(?<![\w:])(/(?!job:|device:|replica:|task:)[^\s:;,'\"]+)")


def _free_bytes(path: str):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path or ".").free
    except OSError:
        return None


def _path_in_tf_message(message: str, workdir: str) -> str:
    """The file a TF storage error names, preferring one inside `workdir`; else `workdir`."""
    found = [p for p in _TF_PATH.findall(message) if not p.startswith("/job")]
    root = os.path.abspath(workdir)
    inside = [p for p in found if os.path.abspath(p).startswith(root)]
    return (inside or found or [workdir])[0]


def storage_error(e: BaseException, workdir: str):
    """A one-line WorkdirError for an OSError / tf.errors.OpError of writing `workdir`, or None.

    Only storage conditions are translated (disk full, read-only, a file in the way);
    anything else (a TF out-of-memory, say) is not ours to reword."""
    if isinstance(e, OSError):
        code, path = e.errno, e.filename or workdir
    elif isinstance(e, tf.errors.OpError):
        code = next((c for m, c in _TF_MESSAGES.items() if m in str(e)), None)
        path = _path_in_tf_message(str(e), workdir)
    else:
        return None
    if code not in _OS_ADVICE:
        return None
    inside = os.path.abspath(str(path)).startswith(os.path.abspath(workdir))
    if not inside and code not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return None  # e.g. a data file that cannot be read: not the workdir's doing
    free = _free_bytes(str(path)) if code in (errno.ENOSPC, errno.EDQUOT) else None
    room = f" ({free / 2**20:.1f} MiB free there)" if free is not None else ""
    return WorkdirError(f"cannot write {path}{room}: {_OS_ADVICE[code]}.")


def make_workdir(workdir: str) -> None:
    """Creates `workdir`; a one-line WorkdirError if that cannot be done."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(
            f"--workdir={workdir} is a file, not a directory; pass a directory "
            "(it is created if missing)."
        )
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise storage_error(e, workdir) or e from None


def write_json_atomic(path: str, obj) -> None:
    """Writes `obj` as JSON at `path` so that a reader sees the old or the new file, never half."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def repair_jsonl_tail(path: str) -> None:
    """Cuts a torn last line (a write killed midway) so the next record starts a line."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if not size:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(max(size - 65536, 0))
        tail = f.read()
        cut = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        logging.warning("Dropping the torn last line of %s (%d bytes).", path, size - cut)
        f.truncate(cut)


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON line in a single write, after mending a torn last line."""
    repair_jsonl_tail(path)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
