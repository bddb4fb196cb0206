"""A stage's progress line with its ETA, printed by rank 0 at a rate that suits a log file.

Ray forwards a worker's output line by line (no carriage returns, no terminal), so the bar is a line, printed at
the first iteration, at every tenth of the stage, at least every ``every_s`` seconds, and at the end: a 5000-iteration
stage prints about a dozen lines, not 5000.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from raydd.console import duration

__all__ = ["Progress", "duration", "progress_line"]

BAR_WIDTH = 20
STEPS = 10  # a line at every 1/STEPS of the stage


def progress_line(stage: str, done: int, total: int, seconds_per_iteration: float, loss: float) -> str:
    """``[static] [########------------] 40% 80/200 0.52 s/it ETA 1m02s loss 0.123``."""
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    eta = duration(seconds_per_iteration * (total - done))
    percent = 100 * done // total if total else 100
    return f"[{stage}] [{bar}] {percent:3d}% {done}/{total} {seconds_per_iteration:.2f} s/it ETA {eta} loss {loss:.5g}"


class Progress:
    """The stage's pace since this attempt's first iteration (which carries the start-up and is timed alone: it
    sets the pace of the first line only), so a resumed attempt times only its own iterations."""

    def __init__(
        self,
        stage: str,
        total: int,
        start: int = 0,
        *,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage, self.total, self.start, self.every_s, self.clock = stage, total, start, every_s, clock
        self.started_at = self.last_printed_at = clock()
        self.first: tuple[int, float] | None = None  # (iteration, time) when this attempt's first one ended
        self.last_step = start * STEPS // total if total else 0

    def update(self, done: int, loss: float) -> str | None:
        """The line to print after iteration ``done`` (1-based) finished, or None when it is not due yet."""
        now = self.clock()
        if self.first is None:
            self.first = (done, now)
            pace = (now - self.started_at) / (done - self.start)
        else:
            pace = (now - self.first[1]) / (done - self.first[0]) if done > self.first[0] else 0.0
        step = done * STEPS // self.total
        due = done == self.start + 1 or done == self.total or step > self.last_step
        if not due and now - self.last_printed_at < self.every_s:
            return None
        self.last_step, self.last_printed_at = step, now
        return progress_line(self.stage, done, self.total, pace, loss)
