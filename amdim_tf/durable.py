"""Every file and directory the package writes, written durably: the previous version or
the new one, never half of either, and a failed write is one line.

- A file (`atomic_path`, `write_bytes`, `write_text`, `write_json`): written to a hidden
  stage beside the target, fsynced, renamed over it, and the directory fsynced, so a
  kill or a crash leaves the old file or the new one.
- A directory of results (`OutputDir`): written whole into a hidden stage beside it and
  renamed into place. POSIX cannot swap two directories atomically, so the previous
  output is parked beside it for the instant between the two renames; the next writer
  puts a parked output back if a kill came in between. A manifest (a file every
  complete output holds, written last) is how an output of this kind is recognised:
  anything else is never replaced. `finish` replaces only what `OutputDir` saw when it
  was created, so a writer never deletes another process's output completed meanwhile.
- An appended log (`append_jsonl`): one line per write, a torn last line (a write killed
  midway) cut before the next.
- A write that fails for a storage reason (disk full, read-only, a file in the way)
  becomes one `StorageError` line: the path, the free space when the disk is full, what
  to do, and what is left ("the previous output is unchanged" or "nothing was written").
  TensorFlow's checkpoint and summary writes report the same conditions as
  `tf.errors.OpError`s; `storage_error` reads those too.

A symlink at a target is written through: the link's target is replaced and the link
kept. Stages and parked outputs are named `.NAME.staging-PID-*` / `.NAME.previous-PID`
beside NAME; one rule removes those whose process is gone.

Bottom of the import order: nothing of amdim_tf but `errors`; TensorFlow only to read an
error it raised.
"""

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import tempfile

from absl import logging

from amdim_tf.errors import UserError


class StorageError(UserError):
    """An output cannot be written: the disk is full or read-only, a file is in the way, or
    another writer's output is there."""


# The work directory's name for it (train, lock and workdir raise it).
WorkdirError = StorageError

# errno -> what went wrong, for the storage conditions a user can act on.
_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted (read-only or immutable)",
    errno.ENOTDIR: "a file is in the way of a directory",
    errno.EEXIST: "a file is in the way of a directory",
}
_FULL = (errno.ENOSPC, errno.EDQUOT)
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
# (TF prefixes op errors with the device).
_TF_PATH = re.compile(r"(?<![\w:])(/(?!job:|device:|replica:|task:)[^\s:;,'\"]+)")


def _free_bytes(path: str):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path or ".").free
    except OSError:
        return None


def _inside(path: str, root: str) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _advice(code: int, flag: str) -> str:
    if code in _FULL:
        return f"free space or pass {flag} on another disk" if flag else "free space"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return f"move the file or pass another {flag}" if flag else "move the file"
    return f"make it writable or pass a writable {flag}" if flag else "make it writable"


def storage_error(
    e: BaseException, target: str, what: str = "", flag: str = "", outcome: str = "", within=()
):
    """The one-line StorageError for `e` (an OSError, or TensorFlow's OpError) raised while
    writing `target`, or None when `e` is not a storage condition of this write.

    `what` names the output with its article ("an embedding"), `flag` the option that
    chose `target` ("--out"), `outcome` what is left (default: "the previous output is
    unchanged" if `target` exists, else "nothing was written"). An error naming a path
    outside `target` (and `within`, e.g. its stage) counts only when the disk is full or
    read-only: an unreadable input is not the output's doing."""
    if isinstance(e, OSError):
        code, path = e.errno, str(e.filename or target)
    elif "tensorflow" in sys.modules and isinstance(e, sys.modules["tensorflow"].errors.OpError):
        code = next((c for m, c in _TF_MESSAGES.items() if m in str(e)), None)
        found = _TF_PATH.findall(str(e))
        path = next((p for p in found if _inside(p, target)), found[0] if found else target)
    else:
        return None
    if code not in _REASONS:
        return None
    roots = (target, *within)
    if not any(_inside(path, r) for r in roots) and code not in (*_FULL, errno.EROFS):
        return None
    free = _free_bytes(path) if code in _FULL else None
    room = f"{free / 2**20:.1f} MiB free there" if free is not None else ""
    if what:
        head = f"cannot write {what} to {target} ({path}{', ' + room if room else ''})"
    else:
        head = f"cannot write {path}{f' ({room})' if room else ''}"
    if not outcome:
        exists = os.path.lexists(target)
        outcome = "the previous output is unchanged" if exists else "nothing was written"
    return StorageError(f"{head}: {_REASONS[code]}; {_advice(code, flag)}; {outcome}.")


# -- stages and the one stale rule ------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _leftover_pid(entry: str, name: str, kind: str):
    """The pid in `.NAME.KIND-PID[-...]`, 0 for an old pid-less leftover, None if `entry`
    is not a KIND leftover of NAME."""
    prefix = f".{name}.{kind}"
    if not entry.startswith(prefix):
        return None
    rest = entry[len(prefix) :]
    if not rest:
        return 0
    if not rest.startswith("-"):
        return None
    pid = rest[1:].split("-")[0].split(".")[0]
    return int(pid) if pid.isdigit() else 0


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)


def _remove_stale_stages(target: str) -> None:
    """Removes the stages beside `target` whose writer is gone (killed before its rename);
    a live writer's stage is kept."""
    parent, name = os.path.split(target)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(parent):
            pid = _leftover_pid(entry, name, "staging")
            if pid is not None and not (pid and _pid_alive(pid)):
                _remove(os.path.join(parent, entry))


def _resolve(target: str) -> str:
    """`target` absolute, through a symlink to what it points at (written through, the
    link kept)."""
    target = os.path.abspath(target)
    return os.path.realpath(target) if os.path.islink(target) else target


def _stage_name(target: str, suffix: str = "") -> str:
    parent, name = os.path.split(target)
    return os.path.join(parent, f".{name}.staging-{os.getpid()}-{os.urandom(4).hex()}{suffix}")


def fsync_dir(path: str) -> None:
    """Makes the renames in `path` survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: str) -> None:
    """Flushes every staged file, so a crash after the rename cannot expose empty ones."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


# -- one file ---------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str, what: str = "", flag: str = ""):
    """Yields a hidden path beside `path` (same extension) for a writer that needs a path
    (np.save, savefig, Keras' save); when the block ends normally the file is fsynced and
    renamed over `path`. On any error the stage is removed and `path` is unchanged; an
    OSError of storage becomes a one-line `StorageError` (`what`, `flag`: see
    `storage_error`)."""
    target = _resolve(path)
    parent = os.path.dirname(target)
    stage = None
    try:
        os.makedirs(parent, exist_ok=True)
        _remove_stale_stages(target)
        stage = _stage_name(target, os.path.splitext(target)[1])
        yield stage
        fd = os.open(stage, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(stage, target)
        fsync_dir(parent)
    except BaseException as e:
        if stage and os.path.lexists(stage):
            _remove(stage)
        error = storage_error(e, target, what, flag, within=[stage or target])
        if error is None:
            raise
        raise error from None


def write_bytes(path: str, data: bytes, what: str = "", flag: str = "") -> str:
    """Writes `data` at `path` atomically (see `atomic_path`); returns `path`."""
    with atomic_path(path, what, flag) as stage, open(stage, "wb") as f:
        f.write(data)
    return path


def write_text(path: str, text: str, what: str = "", flag: str = "") -> str:
    """Writes `text` (UTF-8) at `path` atomically; returns `path`."""
    return write_bytes(path, text.encode("utf-8"), what, flag)


def write_json(path: str, obj, indent: int = 2, sort_keys: bool = True, **kwargs) -> str:
    """Writes `obj` as JSON at `path` atomically; `what`/`flag` as for `atomic_path`."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys), **kwargs)


# -- an appended log --------------------------------------------------------------------


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


def append_jsonl(path: str, record: dict, sort_keys: bool = True) -> None:
    """Appends one JSON line in a single write, after mending a torn last line."""
    repair_jsonl_tail(path)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=sort_keys) + "\n")
        f.flush()
        os.fsync(f.fileno())


# -- a directory of results -------------------------------------------------------------


def _identity(target: str, manifest: str):
    """What `target` is now: None if absent or empty, else its inode and its manifest's
    inode and time (a replaced or rewritten output changes one of them)."""
    try:
        if not os.path.isdir(target) or not os.listdir(target):
            return None if not os.path.lexists(target) or os.path.isdir(target) else "file"
        st = os.stat(target)
        m = os.stat(os.path.join(target, manifest))
        return (st.st_dev, st.st_ino, m.st_ino, m.st_mtime_ns, m.st_size)
    except FileNotFoundError:
        return "incomplete"


class OutputDir:
    """A directory of results written whole (module docstring), with `manifest` written
    last. Created before the work: it refuses a target that is a file or a non-empty
    directory without `manifest` (unless `replace_any`), puts back an output parked by
    a killed writer, and records what is at the target for `finish`.

        output = OutputDir(out_dir, "embed.json", "an embedding")
        ... the work ...
        with output.staged() as stage:
            ... write every file into `stage`, the manifest last ...
    """

    def __init__(
        self, target: str, manifest: str, what: str, flag: str = "out_dir", replace_any=False
    ):
        self.given, self.manifest, self.what, self.flag = target, manifest, what, flag
        self.target = _resolve(target)
        self.replace_any = replace_any
        self._recover_parked()
        self.check()
        self.seen = _identity(self.target, manifest)

    def _parked_entries(self):
        parent, name = os.path.split(self.target)
        if not os.path.isdir(parent):
            return []
        found = []
        for entry in sorted(os.listdir(parent)):
            pid = _leftover_pid(entry, name, "previous")
            if pid is not None and not (pid and _pid_alive(pid)):
                found.append(os.path.join(parent, entry))
        return found

    def _recover_parked(self) -> None:
        """A writer killed between `finish`'s two renames left no output and the previous
        one parked beside it: that one is complete (it held its manifest), so it returns."""
        for parked in self._parked_entries():
            empty = _identity(self.target, self.manifest) is None
            if empty and os.path.exists(os.path.join(parked, self.manifest)):
                if os.path.isdir(self.target):
                    os.rmdir(self.target)  # empty, checked above
                os.rename(parked, self.target)
                logging.warning("Put back %s, parked by a writer killed replacing it.", parked)
            else:
                shutil.rmtree(parked, ignore_errors=True)

    def check(self) -> None:
        """Refuses a target that is a file, or holds files that are not an output of this
        kind (never replaced), before any work."""
        target = self.target
        shown = f"{self.flag}={self.given}" if self.flag else self.given
        if os.path.lexists(target) and not os.path.isdir(target):
            raise StorageError(f"{shown} is a file, not a directory; pass a directory.")
        foreign = not os.path.exists(os.path.join(target, self.manifest))
        if os.path.isdir(target) and os.listdir(target) and foreign and not self.replace_any:
            raise StorageError(
                f"{shown} holds files that are not {self.what} (no {self.manifest}); "
                f"pass a new or empty directory ({self.what} there is replaced whole)."
            )

    @contextlib.contextmanager
    def staged(self):
        """Yields a fresh stage directory; renames it to the target when the block ends
        normally (`finish`). On any error the stage is removed and the target untouched;
        a storage OSError becomes one `StorageError` line."""
        stage = None
        try:
            parent = os.path.dirname(self.target)
            os.makedirs(parent, exist_ok=True)
            _remove_stale_stages(self.target)
            name = os.path.basename(_stage_name(self.target))
            stage = tempfile.mkdtemp(prefix=name + "-", dir=parent)
            yield stage
            if not os.path.exists(os.path.join(stage, self.manifest)):
                raise RuntimeError(f"{self.what} was staged without its {self.manifest}")
            _fsync_tree(stage)
            self.finish(stage)
        except BaseException as e:
            if stage:
                shutil.rmtree(stage, ignore_errors=True)
            error = storage_error(e, self.target, self.what, self.flag, within=[stage or ""])
            if error is None:
                raise
            raise error from None

    def finish(self, stage: str) -> None:
        """Renames the complete `stage` to the target, parking the previous output for the
        instant between the two renames; refuses if the target changed since this object
        saw it (another writer finished there meanwhile: its output is kept)."""
        target = self.target
        now = _identity(target, self.manifest)
        if now != self.seen:
            raise StorageError(
                f"{self.flag + '=' if self.flag else ''}{self.given} was written by another "
                f"process while this one was writing {self.what}; its output is kept and "
                "this one was not written: rerun with another directory, or once the other "
                "writer is done."
            )
        if os.path.isdir(target) and not os.listdir(target):
            os.rmdir(target)
        if not os.path.lexists(target):
            os.rename(stage, target)
        else:
            parent, name = os.path.split(target)
            parked = os.path.join(parent, f".{name}.previous-{os.getpid()}")
            _remove(parked)
            os.rename(target, parked)
            try:
                os.rename(stage, target)
            except BaseException:
                os.rename(parked, target)
                raise
            shutil.rmtree(parked, ignore_errors=True)
        fsync_dir(os.path.dirname(target))


@contextlib.contextmanager
def scratch_dir(beside: str):
    """A private directory beside `beside`, removed on exit (or, after a kill, by the next
    write of `beside`): for converters that need room on the same disk."""
    target = _resolve(beside)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix=os.path.basename(_stage_name(target)) + "-", dir=parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
