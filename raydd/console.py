"""What a command prints, on a terminal and on a file or a pipe.

Long work shows one progress bar on a terminal; elsewhere (a log file, a pipe, ``ray job logs``) a carriage-return
bar is noise, so it is a line each time a task ends or a tenth of the work is done, with its ETA. Ray's driver
prints its workers' output with colour codes and folds repeats into "[repeated 4x across cluster]" lines: on a file
or a pipe both are turned off. Detail a user rarely wants (an evaluation run's per-epoch losses, which MLflow holds)
goes to :func:`logger` at DEBUG, shown when ``RAYDD_LOG_LEVEL=DEBUG``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import IO

from raydd.errors import RayddError

LEVEL_VARIABLE = "RAYDD_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
STEPS = 10  # a line at every 1/STEPS of the work, and whenever a task ends


def is_terminal() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


def plain_ray_output() -> None:
    """On a file or a pipe: Ray's driver prints worker lines uncoloured (``RAY_COLOR_PREFIX=0``, read as it prints)
    and each one as it is (``RAY_DEDUP_LOGS=0``, read when Ray is imported: so this runs on ``import raydd``, before
    any raydd module imports Ray). A value the user set wins; workers inherit them, which changes nothing there."""
    if not is_terminal():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def logger(name: str) -> logging.Logger:
    """raydd's logger ``name``: to stderr at ``RAYDD_LOG_LEVEL`` (default INFO), set up once per process, so a Ray
    worker (which inherits the variable from a local cluster's driver) logs as its driver does."""
    base = logging.getLogger("raydd")
    if not base.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        base.addHandler(handler)
        base.setLevel(log_level())
        base.propagate = False
    return logging.getLogger(name)


def log_level() -> str:
    """``RAYDD_LOG_LEVEL``, default INFO."""
    level = os.environ.get("RAYDD_LOG_LEVEL", "INFO").upper()
    if level not in LEVELS:
        raise RayddError(f"{LEVEL_VARIABLE}={level}: expected one of {', '.join(LEVELS)}")
    return level


def ray_train_log_level() -> str:
    """Ray Train's console level: its INFO lines (every checkpoint, every report, the worker group's resources)
    only at DEBUG; they are in the Ray session's log files whatever the level."""
    return "INFO" if log_level() == "DEBUG" else "WARNING"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLines:
    """The progress of ``total`` units as lines, ``evaluate minic3d: 3/5 run (60%) in 1m02s, ETA 41s``: one when a
    task ends (:meth:`update` with ``task_ended``) or a tenth of the units is done, and at the end."""

    def __init__(
        self,
        total: int,
        description: str,
        unit: str,
        file: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.description, self.unit, self.clock = total, description, unit, clock
        self.file = file or sys.stderr
        self.done, self.last_step, self.started = 0, 0, clock()

    def update(self, units: int, *, task_ended: bool = False) -> None:
        self.done += units
        step = self.done * STEPS // self.total if self.total else STEPS
        if task_ended or step > self.last_step or self.done == self.total:
            self.last_step = step
            print(self.line(), file=self.file, flush=True)

    def line(self) -> str:
        elapsed = self.clock() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        percent = 100 * self.done // self.total if self.total else 100
        return (
            f"{self.description}: {self.done}/{self.total} {self.unit} ({percent}%) in {duration(elapsed)}, "
            f"ETA {duration(eta)}"
        )
