"""Benchmark evaluation: MiniC3D training speed, and N evaluation runs in parallel on Ray vs one after another.

    .venv/bin/python benchmarks/evaluate.py           # ~5 min on 2 cores
    .venv/bin/python benchmarks/evaluate.py --quick

1. Training clips/s (forward + backward + SGD step, batch 64 at builtin size, 16 at 16x112^2) of
   each classifier on random data, one thread, in-process.
2. Wall time of ``--runs`` evaluation runs (random IPC 5 on the built-in dataset) through
   ``python -m raydd.evaluate``'s engine as parallel Ray tasks (one CPU each), against the same runs
   executed one after another in this process. Target on 2 cores: >= 1.6x.

Prints a table and writes benchmarks/results/evaluate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import ray
import torch
import torch.nn.functional as F

from raydd.evaluate import EvalConfig, evaluate
from raydd.evaluation.plan import plan_evaluation
from raydd.evaluation.runs import execute
from raydd.models import build_model
from raydd.prepare import PrepareConfig, prepare


def training_speed(model: str, clip_shape: tuple[int, int, int, int], batch: int, seconds: float) -> float:
    torch.manual_seed(0)
    network = build_model(model, num_classes=10, clip_shape=clip_shape)
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-2, momentum=0.9)
    t, h, w, c = clip_shape
    videos, labels = torch.randn(batch, c, t, h, w), torch.randint(10, (batch,))

    def step() -> None:
        loss = F.cross_entropy(network(videos), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up, not timed
    steps, started = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/evaluate.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    seconds = 3.0 if args.quick else 10.0
    epochs = 10 if args.quick else 40

    speeds = {}
    for model in ("minic3d", "cnn_gru", "cnn_lstm"):
        speeds[f"{model} 8x32x32 (builtin)"] = training_speed(model, (8, 32, 32, 3), 64, seconds)
        speeds[f"{model} 16x112x112"] = training_speed(model, (16, 112, 112, 3), 16, seconds)

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    store = tempfile.mkdtemp(prefix="raydd-bench-eval-")
    prepare(PrepareConfig(store=store))
    config = EvalConfig(
        data=f"{store}/datasets/builtin",
        store=store,
        model="minic3d",
        runs=args.runs,
        random_ipc=5,
        epochs=epochs,
        experiment="bench",
    )
    evaluate(EvalConfig(**{**config.__dict__, "runs": 2, "epochs": 1}))  # warm up the worker processes
    started = time.perf_counter()
    evaluate(config)
    parallel = time.perf_counter() - started
    plan = plan_evaluation(
        **{
            k: getattr(config, k)
            for k in (
                "data",
                "test",
                "model",
                "runs",
                "random_ipc",
                "preset",
                "epochs",
                "lr",
                "batch_size",
                "momentum",
                "weight_decay",
                "seed",
                "device",
            )
        }
    )
    started = time.perf_counter()
    for task in plan.tasks:
        execute(task)
    sequential = time.perf_counter() - started
    speedup = sequential / parallel

    rows = [(f"train clips/s, {name}", f"{value:.1f}", "", "") for name, value in speeds.items()]
    rows += [
        (f"{args.runs} runs (MiniC3D, random IPC 5, {epochs} epochs) one after another", f"{sequential:.1f} s", "", ""),
        (f"{args.runs} runs in parallel as Ray tasks (2 CPUs)", f"{parallel:.1f} s", "", ""),
        ("speedup parallel / sequential", f"{speedup:.2f} x", ">= 1.60 x", "PASS" if speedup >= 1.6 else "FAIL"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'value':>10}  {'target':>10}  status")
    for name, value, target, status in rows:
        print(f"{name:<{width}}  {value:>10}  {target:>10}  {status}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "train_clips_per_s": speeds,
                "sequential_s": sequential,
                "parallel_s": parallel,
                "speedup": speedup,
                "runs": args.runs,
                "epochs": epochs,
            },
            indent=2,
        )
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
