"""One training run per work directory: an exclusive `flock` on WORKDIR/.lock."""

import contextlib
import fcntl
import os
import socket

from amdim_tf.run.workdir import LOCK_FILE, WorkdirConflictError, workdir_storage_error


class WorkdirLock:
    """An exclusive lock on a work directory for a run's lifetime (`flock` on WORKDIR/.lock).

    The lock file holds "pid host" of its holder for the message a second run gets.
    The kernel drops the lock when its process dies, even by kill -9, so a file left
    behind never blocks. The holder unlinks the file on release (still locked), and a
    taker checks that the file it locked is still the one at the path, so two runs
    can never hold locks on two different files. Not for NFS without lockd.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd = None

    def acquire(self) -> "WorkdirLock":
        for _ in range(10):  # a holder may unlink the file between our open and flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise workdir_storage_error(e, self.path) or e from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").split()
                os.close(fd)
                pid, host = (holder + ["?", "?"])[:2]
                raise WorkdirConflictError(
                    f"{os.path.dirname(self.path)} is in use by another training run (pid "
                    f"{pid} on host {host}); wait for it to end or stop it, or use another "
                    "--workdir."
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)
        raise WorkdirConflictError(f"{self.path} keeps changing; is another run starting?")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
