"""An output directory written whole: the previous output or the new one, never a mix.

    with staging.staged(out_dir, manifest="embed.json", what="an embedding") as stage:
        ... write every file into `stage`, the manifest last ...

The tools that write a directory of results (embed, finetune) write it into a hidden
directory beside `out_dir` and rename it into place when it is complete. A kill or a
full disk at any moment leaves the previous output whole (or none): POSIX cannot swap
two directories atomically, so the previous output is parked as `.NAME.previous` for the
instant between the two renames, and the next call puts a parked output back if a kill
came in between. The manifest (a file every complete output holds) is how a directory
is recognised as one this tool wrote: anything else is never replaced. A failed write
(disk full, read-only, a file in the way) is one line naming the path and saying that
the previous output is unchanged.

Versioned SavedModels (`export.py`) follow the same rule with their own layout
(OUT/VERSION/, several versions side by side).
"""

import contextlib
import errno
import os
import shutil


def _parked(out_dir: str) -> str:
    parent, name = os.path.split(os.path.abspath(out_dir))
    return os.path.join(parent, f".{name}.previous")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover (a caught error): stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check(out_dir: str, manifest: str, what: str) -> None:
    """Refuses, before any work, an `out_dir` that is a file or a non-empty directory
    without `manifest` (not an output of this kind, never replaced). Puts back an output
    parked by a kill between `finish`'s renames."""
    out_dir = os.path.abspath(out_dir)
    parked = _parked(out_dir)
    if os.path.isdir(parked):
        if not os.path.exists(out_dir):
            os.replace(parked, out_dir)  # the kill came between the two renames
        else:
            shutil.rmtree(parked, ignore_errors=True)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.exists(os.path.join(out_dir, manifest)):
            raise ValueError(
                f"out_dir={out_dir} holds files that are not {what} (no {manifest}); "
                f"pass a new or empty directory ({what} there is replaced whole)."
            )
    elif os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir={out_dir} is a file, not a directory; pass a directory.")


def begin(out_dir: str, manifest: str, what: str) -> str:
    """A new hidden directory beside `out_dir` to write into, after `check` and after
    removing the stages of killed writers."""
    check(out_dir, manifest, what)
    out_dir = os.path.abspath(out_dir)
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    for stale in os.listdir(parent):  # left by a killed writer into the same out_dir
        if stale.startswith(f".{name}.staging-"):
            pid = stale.rsplit("-", 1)[-1]
            if not (pid.isdigit() and _alive(int(pid))):
                shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    stage = os.path.join(parent, f".{name}.staging-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    return stage


def finish(stage: str, out_dir: str) -> None:
    """Renames the complete `stage` to `out_dir`, parking the previous output meanwhile."""
    out_dir = os.path.abspath(out_dir)
    parked = _parked(out_dir)
    if os.path.exists(out_dir):
        os.replace(out_dir, parked)
    os.replace(stage, out_dir)
    shutil.rmtree(parked, ignore_errors=True)


def storage_error(e: OSError, out_dir: str, what: str) -> ValueError:
    """A one-line ValueError for a write that failed (disk full, read-only, ...).
    `what` names the output with its article ("an embedding")."""
    where = e.filename or out_dir
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(out_dir))).free
        why = (
            f"the disk is full ({free / 2**20:.1f} MiB free there); free space or pass another out"
        )
    else:
        why = f"{e.strerror or e}; pass a writable out"
    kept = "the previous output is unchanged" if os.path.exists(out_dir) else "nothing was written"
    return ValueError(f"cannot write {what} to {out_dir} ({where}): {why}; {kept}.")


@contextlib.contextmanager
def staged(out_dir: str, manifest: str, what: str):
    """Yields a stage directory; renames it to `out_dir` when the block ends normally.
    On any error the stage is removed and `out_dir` is untouched; an OSError becomes a
    one-line `storage_error`. The block writes `manifest` into the stage, last."""
    stage = begin(out_dir, manifest, what)
    try:
        yield stage
        if not os.path.exists(os.path.join(stage, manifest)):
            raise RuntimeError(f"{what} was staged without its {manifest}")
        finish(stage, out_dir)
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise storage_error(e, out_dir, what) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
