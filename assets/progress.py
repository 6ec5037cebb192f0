"""Progress lines for long steps: done / total, rate and ETA in the run's log, a few per minute."""

from __future__ import annotations

import time
from collections.abc import Callable

Log = Callable[[str], None]


class Progress:
    """Logs "<what>: done/total unit (share) at rate unit/s, ETA" at most every `every_s`
    seconds while `update` is called, and one closing line from `finish`."""

    def __init__(
        self,
        log: Log,
        what: str,
        total: float,
        unit: str,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.what, self.total, self.unit = log, what, total, unit
        self.every_s, self.clock = every_s, clock
        self.start = self.last = clock()
        self.done = 0.0

    def update(self, done: float) -> None:
        self.done = done
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        line = f"{self.what}: {self._amount(done)}"
        if self.total:
            line += f" of {self._amount(self.total)} {self.unit} ({done / self.total:.0%})"
        else:
            line += f" {self.unit}"
        line += f" at {rate:,.1f} {self.unit}/s"
        if self.total and rate:
            line += f", ETA {_duration((self.total - done) / rate)}"
        self.log(line)

    def finish(self) -> None:
        seconds = self.clock() - self.start
        rate = self.done / max(seconds, 1e-9)
        self.log(
            f"{self.what} done: {self._amount(self.done)} {self.unit} in {_duration(seconds)} "
            f"({rate:,.1f} {self.unit}/s)"
        )

    def _amount(self, value: float) -> str:
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
