"""Console output on a file or a pipe: a progress line a task (with its ETA), Ray's output plain, DEBUG detail."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from raydd.console import ProgressLines

ROOT = Path(__file__).resolve().parents[1]


def test_progress_lines_print_one_line_a_task_with_its_eta() -> None:
    now = [0.0]
    out = io.StringIO()
    lines = ProgressLines(4, "evaluate minic3d", "run", file=out, clock=lambda: now[0])
    for _ in range(4):
        now[0] += 30.0
        lines.update(1, task_ended=True)
    assert out.getvalue().splitlines() == [
        "evaluate minic3d: 1/4 run (25%) in 30s, ETA 1m30s",
        "evaluate minic3d: 2/4 run (50%) in 1m00s, ETA 1m00s",
        "evaluate minic3d: 3/4 run (75%) in 1m30s, ETA 30s",
        "evaluate minic3d: 4/4 run (100%) in 2m00s, ETA 0s",
    ]


def test_progress_lines_of_many_units_print_a_line_a_tenth() -> None:
    out = io.StringIO()
    lines = ProgressLines(500, "prepare builtin", "clip", file=out, clock=lambda: 1.0)
    for _ in range(500):
        lines.update(1)
    assert len(out.getvalue().splitlines()) == 10 and "500/500 clip (100%)" in out.getvalue().splitlines()[-1]


def test_import_raydd_makes_ray_output_plain_on_a_pipe_unless_set() -> None:
    probe = "import os, raydd; print(os.environ.get('RAY_DEDUP_LOGS'), os.environ.get('RAY_COLOR_PREFIX'))"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    piped = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert piped.stdout.split() == ["0", "0"]
    given = {**env, "RAY_DEDUP_LOGS": "1"}
    kept = subprocess.run([sys.executable, "-c", probe], env=given, capture_output=True, text=True, check=True)
    assert kept.stdout.split() == ["1", "0"]
