"""Run the shared reference timing harness (``time_official.py``, see its README) on an exported tree of
the reference implementation, in a subprocess: its seconds per iteration, and (``--count-flops``) the
FLOPs of one of its iterations, counted by ``torch.utils.flop_counter.FlopCounterMode`` around the
harness run in-process (setup included; it holds no FLOP-counted work).

``--cpu-clock`` runs the harness with ``time.perf_counter`` replaced by ``time.process_time``, so that the
seconds it reports are the CPU seconds of its process (all threads): on a machine loaded far beyond its
cores, wall seconds mostly measure the other processes, CPU seconds the work.

Nothing of the reference is copied here: the harness imports the reference's modules from ``--official``.

    python benchmarks/reference_harness.py [--count-flops] [--cpu-clock] HARNESS -- --official TREE --mode dm ...
"""

from __future__ import annotations

import dataclasses
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REFERENCE_IMPORTS = ("torchvision", "scipy", "tqdm")  # what the reference tree imports: pyproject's `bench` extra

FLOPS = "FLOPS "
MODES = {
    ("dm", "naive"): "dm",
    ("dm", "static-dynamic"): "dm_s2d",
    ("mtt", "naive"): "mtt",
    ("mtt", "static-dynamic"): "mtt_s2d",
}


@dataclasses.dataclass(frozen=True)
class Harness:
    script: Path  # time_official.py
    tree: Path  # the exported reference tree
    threads: int
    pythonpath: str | None = None  # extra import path for the harness's dependencies (scipy, tqdm)

    def check(self) -> None:
        if not self.script.is_file():
            raise SystemExit(f"reference harness {self.script} not found: pass --reference-harness PATH")
        if not (self.tree / "networks.py").is_file() or not (self.tree / "reparam_module.py").is_file():
            raise SystemExit(
                f"{self.tree} is not an exported reference tree (no networks.py / reparam_module.py): export "
                "github:yuz1wan/video_distillation as the harness README says"
            )

        missing = self.missing_modules()
        if missing:
            raise SystemExit(
                f"the reference rows need {', '.join(missing)} (not importable here): pip install -e '.[bench]'"
            )

    def missing_modules(self) -> list[str]:
        """The reference's imports that its processes (this Python, ``--reference-pythonpath``) cannot find."""
        probe = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))"
        found = subprocess.run(
            [sys.executable, "-c", probe, *REFERENCE_IMPORTS], capture_output=True, text=True, env=self._env()
        )
        return found.stdout.split()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (self.pythonpath, env.get("PYTHONPATH")) if p)
        return env

    def arguments(
        self, mode: str, shape: dict[str, int], settings: dict[str, int], warmup: int, iters: int
    ) -> list[str]:
        args = ["--official", str(self.tree), "--mode", mode, "--threads", str(self.threads)]
        for key, value in {**shape, **settings, "warmup": warmup, "iters": iters}.items():
            args += [f"--{key}", str(value)]
        return args

    def time(
        self, mode: str, shape: dict[str, int], settings: dict[str, int], warmup: int, iters: int, clock: str = "wall"
    ) -> dict[str, Any]:
        """The harness's JSON result (``times_s``, ``median_s``, ``breakdown_last_s``, ``peak_rss_mb``; CPU
        seconds under ``clock="cpu"``), or ``{"error": ...}``."""
        with tempfile.TemporaryDirectory(prefix="raydd-reference-") as folder:
            out = Path(folder) / "result.jsonl"
            args = self.arguments(mode, shape, settings, warmup, iters) + ["--json", str(out)]
            wrapper = [__file__, "--cpu-clock", str(self.script), "--"] if clock == "cpu" else [str(self.script)]
            done = subprocess.run([sys.executable, *wrapper, *args], capture_output=True, text=True, env=self._env())
            if done.returncode != 0 or not out.exists():
                tail = [line for line in done.stderr.splitlines() if line.strip()]
                return {"error": (tail[-1] if tail else f"exit status {done.returncode}")[:200]}
            return json.loads(out.read_text().splitlines()[-1])

    def flops(self, mode: str, shape: dict[str, int], settings: dict[str, int]) -> float | None:
        """FLOPs of one reference iteration (no warm-up), or None if the count failed."""
        args = self.arguments(mode, shape, settings, 0, 1)
        done = subprocess.run(
            [sys.executable, __file__, "--count-flops", str(self.script), "--", *args],
            capture_output=True,
            text=True,
            env=self._env(),
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith(FLOPS)]
        return float(lines[-1][len(FLOPS) :]) if done.returncode == 0 and lines else None


def run_harness(script: str, args: list[str], *, count_flops: bool, cpu_clock: bool) -> None:
    sys.argv = [script, *args]
    if cpu_clock:
        time.perf_counter = time.process_time
    if not count_flops:
        runpy.run_path(script, run_name="__main__")
        return
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        runpy.run_path(script, run_name="__main__")
    print(f"{FLOPS}{counter.get_total_flops()}", flush=True)


if __name__ == "__main__":
    flags = {"--count-flops", "--cpu-clock"}
    given = [a for a in sys.argv[1:3] if a in flags]
    rest = sys.argv[1 + len(given) :]
    if len(rest) < 2 or rest[1] != "--":
        raise SystemExit(__doc__)
    run_harness(rest[0], rest[2:], count_flops="--count-flops" in given, cpu_clock="--cpu-clock" in given)
