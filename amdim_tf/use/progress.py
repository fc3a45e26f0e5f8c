"""Progress of long work as plain lines (one when a unit starts, one when it ends, with
the time so far and an estimate of what is left), readable in a terminal and in a log
file alike: no redraws, flushed at once."""

import sys
import time

from amdim_tf.run.progress import duration as _duration


class Progress:
    """`total` units of work; `start(label)` then `done(result)` for each.

    Units of different kinds take different times (a frozen probe a second, a
    fine-tuning arm minutes): `kinds` names the kind of every unit in the order they
    run, and the ETA counts each unit left at the mean time measured for its kind (plus
    the mean time spent between units). Until every kind still to come has run once,
    no ETA is given: a guess from another kind misled by 20x. Without `kinds` every
    unit is of one kind.
    """

    def __init__(self, total: int, stream=None, enabled: bool = True, kinds=None):
        self.total = int(total)
        self.enabled = enabled
        self.count = 0
        self.stream = stream or sys.stdout
        self.kinds = list(kinds) if kinds is not None else [""] * self.total
        if len(self.kinds) != self.total:
            raise ValueError(f"{len(self.kinds)} kinds for {self.total} units")
        self._began = time.perf_counter()
        self._label = ""
        self._unit_began = self._began
        self._times = {}  # kind -> the measured durations of its units

    def start(self, label: str) -> None:
        self._label = label
        self._unit_began = time.perf_counter()
        if self.enabled:
            print(f"[{self.count + 1}/{self.total}] {label} ...", file=self.stream, flush=True)

    def _eta(self, elapsed: float) -> str:
        left = self.kinds[self.count :]
        if not left:
            return ""
        unmeasured = [kind for kind in left if kind not in self._times]
        if unmeasured:
            return f"; ETA after the first {unmeasured[0]}"
        mean = {kind: sum(t) / len(t) for kind, t in self._times.items()}
        between = (elapsed - sum(sum(t) for t in self._times.values())) / self.count
        return f"; ETA {_duration(sum(mean[kind] + between for kind in left))}"

    def done(self, result: str = "") -> None:
        now = time.perf_counter()
        self._times.setdefault(self.kinds[self.count], []).append(now - self._unit_began)
        self.count += 1
        elapsed = now - self._began
        if not self.enabled:
            return
        print(
            f"[{self.count}/{self.total}] {self._label}{': ' + result if result else ''} "
            f"({_duration(now - self._unit_began)}, {_duration(elapsed)} in all"
            f"{self._eta(elapsed)})",
            file=self.stream,
            flush=True,
        )
