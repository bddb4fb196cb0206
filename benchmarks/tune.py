"""Benchmark ``python -m raydd.tune``: trials/hour with 1 and 2 concurrent trials, and the time that
sharing stage 1 saves.

    .venv/bin/python benchmarks/tune.py           # ~6 min on 2 cores
    .venv/bin/python benchmarks/tune.py --quick   # ~2 min

1. The same sweep (DM static-dynamic, built-in dataset, ``--trials`` trials, no early stopping) with
   ``--max-concurrent 1`` and ``2``, each in a fresh store, one CPU per trial: trials/hour of the
   sweep (stage 1 excluded: it runs once before the trials).
2. Stage 1 timed on its own: without sharing, every trial would pay it again, so sharing saves
   (trials - 1) x stage 1 per sweep.
3. A trial's loss curve written to MLflow (a SQLite store) the way trials used to (one request per
   iteration, from the trial) and the way the sweep's driver now does (batched ``log_batch`` requests):
   requests and seconds per trial.

Prints a table and writes benchmarks/results/tune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import ray
import torch

from raydd.data.reader import open_prepared
from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import resolve_presets
from raydd.distill.stages import STATIC, StageSpec
from raydd.layout import StoreLayout
from raydd.prepare import PrepareConfig, prepare
from raydd.tracking import mlflow_run
from raydd.tuning.sweep import sweep_presets, tune
from raydd.tuning.sweep_config import TuneConfig
from raydd.tuning.trial import fit_static, validation_split


def mlflow_paths(root: Path, iterations: int) -> dict[str, dict[str, float]]:
    """Seconds and requests to log one trial's ``iterations`` losses: per iteration vs. batched."""
    curve = [1.0 / (i + 1) for i in range(iterations)]
    paths = {}
    for path in ("per iteration", "batched"):
        with mlflow_run(str(root / "mlflow"), "bench-mlflow", path, {"path": path}) as tracker:
            started = time.perf_counter()
            if path == "per iteration":
                for step, loss in enumerate(curve):
                    tracker.log_metrics({"loss": loss}, step=step)
            else:
                tracker.log_series({"loss": curve})
            seconds = time.perf_counter() - started
            assert tracker.series_length("loss") == iterations
        requests = iterations if path == "per iteration" else -(-iterations // 1000)
        paths[path] = {"seconds": seconds, "requests": requests}
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/tune.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    iterations, epochs = (10, 10) if args.quick else (40, 50)
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="raydd-bench-tune-"))
    logged = mlflow_paths(root, 200 if args.quick else 2000)
    prepare(PrepareConfig(store=str(root / "prepared")))

    preset = resolve_presets(DistillConfig(dataset="builtin", method="dm", ipc=1, iterations=iterations)).run
    dataset = open_prepared(StoreLayout.of(str(root / "prepared")).dataset("builtin").uri)
    train, _ = validation_split(dataset.split("train").labels, len(dataset.classes), 0.2, 0)
    started = time.perf_counter()
    fit_static(
        StageSpec(stage=STATIC, method="dm", dataset_uri=str(dataset.location.uri), ipc=1, preset=preset),
        train,
        str(root / "static-alone"),
    )
    stage1 = time.perf_counter() - started

    sweeps = {}
    for concurrent in (1, 2):
        store = root / f"c{concurrent}"
        shutil.copytree(
            StoreLayout.of(str(root / "prepared")).dataset("builtin").path,
            StoreLayout.of(str(store)).dataset("builtin").path,
        )
        config = TuneConfig(
            store=str(store),
            num_samples=args.trials,
            max_concurrent=concurrent,
            iterations=iterations,
            eval_epochs=epochs,
            grace_period=iterations,
            experiment="bench",
        )
        started = time.perf_counter()
        rows = tune(config, sweep_presets(config)).rows
        total = time.perf_counter() - started
        seconds = total - stage1  # the sweep's own stage 1 is the one timed above
        sweeps[concurrent] = {"seconds": total, "trials": len(rows), "trials_per_hour": len(rows) / seconds * 3600}

    speedup = sweeps[2]["trials_per_hour"] / sweeps[1]["trials_per_hour"]
    saved = (args.trials - 1) * stage1
    rows = [
        (f"stage 1 alone ({iterations} iterations)", f"{stage1:.1f} s"),
        *[
            (f"sweep, {args.trials} trials, max-concurrent {c} (incl. stage 1)", f"{s['seconds']:.1f} s")
            for c, s in sweeps.items()
        ],
        *[(f"trials/hour, max-concurrent {c}", f"{s['trials_per_hour']:.0f}") for c, s in sweeps.items()],
        ("trials/hour, 2 / 1", f"{speedup:.2f} x"),
        *[
            (f"MLflow, one trial's loss curve, {path}", f"{p['requests']} requests, {p['seconds']:.2f} s")
            for path, p in logged.items()
        ],
        (
            "MLflow seconds, per iteration / batched",
            f"{logged['per iteration']['seconds'] / logged['batched']['seconds']:.0f} x",
        ),
        (
            f"stage 1 shared: saved per sweep ({args.trials} trials)",
            f"{saved:.1f} s ({saved / (sweeps[1]['seconds'] + saved):.0%} of an unshared sweep)",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "iterations": iterations,
                "eval_epochs": epochs,
                "trials": args.trials,
                "stage1_s": stage1,
                "sweeps": sweeps,
                "speedup": speedup,
                "stage1_saved_s": saved,
                "mlflow_curve": logged,
            },
            indent=2,
        )
    )
    print(f"wrote {args.output}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
