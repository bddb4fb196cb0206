"""A stage's progress line: its bar, pace and ETA, and how often it is printed."""

from __future__ import annotations

import re

from raydd.distill.progress import Progress, duration, progress_line


class Clock:
    """A clock the test moves: the progress logic reads time only through it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_duration_reads_in_seconds_minutes_and_hours() -> None:
    assert [duration(s) for s in (0, 42.4, 185, 7620, -3)] == ["0s", "42s", "3m05s", "2h07m", "0s"]


def test_the_line_has_the_bar_the_count_the_pace_and_the_eta() -> None:
    line = progress_line("dynamic", 80, 200, 0.5, 0.123456)
    assert line == "[dynamic] [########------------]  40% 80/200 0.50 s/it ETA 1m00s loss 0.12346"
    assert progress_line("static", 200, 200, 0.5, 1.0).startswith("[static] [" + "#" * 20 + "] 100% 200/200")


def test_lines_come_at_the_first_iteration_every_tenth_and_the_end_with_the_eta_of_the_pace() -> None:
    clock = Clock()
    progress = Progress("static", 100, every_s=1e9, clock=clock)
    printed = {}
    for done in range(1, 101):
        clock.now += 5.0 if done == 1 else 0.5  # a slow first iteration (start-up), then 0.5 s each
        line = progress.update(done, loss=1.0)
        if line is not None:
            printed[done] = line
    assert list(printed) == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert "5.00 s/it" in printed[1]  # the first line has only the first iteration to go by
    pace, eta = re.search(r"([\d.]+) s/it ETA (\S+)", printed[50]).groups()
    assert pace == "0.50" and eta == "25s"  # 50 left at 0.5 s: the start-up does not inflate it
    assert printed[100].endswith("ETA 0s loss 1")


def test_a_slow_stage_prints_at_least_every_interval_and_a_resumed_one_times_its_own_iterations() -> None:
    clock = Clock()
    progress = Progress("dynamic", 1000, start=400, every_s=30.0, clock=clock)
    printed = []
    for done in range(401, 431):
        clock.now += 4.0
        if progress.update(done, loss=0.5) is not None:
            printed.append(done)
    # 401: the attempt's first; then every 30 s at 4 s an iteration (8 iterations), none at a tenth (500 is later)
    assert printed == [401, 409, 417, 425]
    assert Progress("dynamic", 1000, start=400, clock=clock).update(401, 0.5) is not None
