"""Progress of long work as plain lines (one when a unit starts, one when it ends, with
the time so far and an estimate of what is left), readable in a terminal and in a log
file alike: no redraws, flushed at once."""

import sys
import time


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """`total` units of work; `start(label)` then `done(result)` for each.

    The ETA assumes the remaining units take the mean time of those done so far.
    """

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total = int(total)
        self.enabled = enabled
        self.count = 0
        self.stream = stream or sys.stdout
        self._began = time.perf_counter()
        self._label = ""
        self._unit_began = self._began

    def start(self, label: str) -> None:
        self._label = label
        self._unit_began = time.perf_counter()
        if self.enabled:
            print(f"[{self.count + 1}/{self.total}] {label} ...", file=self.stream, flush=True)

    def done(self, result: str = "") -> None:
        self.count += 1
        now = time.perf_counter()
        elapsed = now - self._began
        left = elapsed / self.count * (self.total - self.count)
        eta = f"; ETA {_duration(left)}" if self.count < self.total else ""
        if not self.enabled:
            return
        print(
            f"[{self.count}/{self.total}] {self._label}{': ' + result if result else ''} "
            f"({_duration(now - self._unit_began)}, {_duration(elapsed)} in all{eta})",
            file=self.stream,
            flush=True,
        )
