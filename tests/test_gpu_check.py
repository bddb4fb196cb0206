"""benchmarks/gpu_check.py, the prepared GPU check, kept from rotting: its dry run executes every check's code on
the CPU at tiny shapes (two gloo ranks for the multi-GPU checks), and without a GPU a plain run refuses in one line."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
METHODS, PARADIGMS, PRECISIONS = ("dm", "dc", "mtt", "frepo"), ("naive", "static-dynamic"), ("fp32", "bf16")
# Every kind of check the GPU run must answer (issue 26, item 7), by the start of its rows' names.
KINDS = (
    "peak bf16 GFLOP/s",
    "run builtin",
    "run miniucf",
    "resident = streamed",
    "gpu vs cpu",
    "plan builtin",
    "plan miniucf",
    "GFLOP/s miniucf dm",
    "GPU busy k400 dm naive auto resident",
    "GPU busy k400 dm naive auto streamed",
    "memory-bounded mtt",
    "two ranks builtin dm",
    "two ranks builtin mtt",
)


def _run(*args: str, cuda: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU, even on a machine that has one
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.mark.slow
def test_the_dry_run_answers_every_check_without_claiming_a_gpu_result(tmp_path: Path) -> None:
    output = tmp_path / "gpu.json"
    done = _run("--dry-run", "--multi-gpu", "--store", str(tmp_path / "store"), "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    checks = {check["name"]: check for check in results["checks"]}
    assert results["dry_run"] is True and len(checks) == len(results["checks"]), "check names are unique"
    for kind in KINDS:
        assert any(name.startswith(kind) for name in checks), f"no {kind!r} check in {sorted(checks)}"
    for shape, method, paradigm, precision in itertools.product(("builtin", "miniucf"), METHODS, PARADIGMS, PRECISIONS):
        rows = [n for n in checks if n.startswith(f"run {shape} {method} {paradigm} {precision} ")]
        assert len(rows) == (1 if method == "mtt" else 2), (shape, method, paradigm, precision, rows)  # MTT: no stream
    for name, check in checks.items():
        assert check["status"] == "dry-run", f"{name}: {check['status']} {check['measured'].get('error', '')}"
    for name, check in checks.items():  # what ran, ran: one finite iteration (bf16 MTT may diverge on a CPU)
        measured = check["measured"]
        if not name.startswith("run ") or "error" in measured:
            continue
        assert len(measured["losses"]) == 1 and math.isfinite(measured["losses"][0]), name
        assert measured["peak_bytes"] is None, f"{name}: a GPU number in a dry run"
        if name.endswith(" resident"):
            assert measured["resident_clips"] > 0, f"{name}: the clips were not kept resident"
        if name.endswith(" streamed"):
            assert measured["resident_clips"] == 0, f"{name}: the clips were kept resident"
    ranks = checks["two ranks builtin dm naive fp32"]["measured"]
    assert len(ranks["ranks"]) == 2 and ranks["max_relative_gap"] <= 1e-3  # the class split = one process
    assert checks["GPU busy k400 dm naive auto streamed"]["measured"]["busy_share"] is None  # not faked
    assert "dry-run" in done.stdout and str(output) in done.stderr


def test_without_a_gpu_it_refuses_in_one_line_naming_the_dry_run(tmp_path: Path) -> None:
    done = _run("--output", str(tmp_path / "gpu.json"), cuda=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "--dry-run" in lines[0], done.stderr
    assert not (tmp_path / "gpu.json").exists()
