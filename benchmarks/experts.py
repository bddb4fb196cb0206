"""Benchmark expert trajectories: Ray throughput and overhead, shard size and one-epoch fetch time.

    .venv/bin/python benchmarks/experts.py          # ~3-4 min on 2 cores

1. Trajectories/hour of ``python -m raydd.experts``'s engine with 2 parallel workers against 1
   (4 MiniC3D experts, width 64, 11 epochs on the built-in dataset). Target on 2 cores: >= 1.7x.
2. Ray overhead per trajectory: the 1-worker run's seconds per expert against the same
   expert trained by a plain call of the trainer in a fresh process, timed inside it. Target: <= 10 %.
   Ray runs its workers at nice 15, so the plain loop is measured at nice 15 too (and at nice 0 for
   reference): on an idle machine the two agree; beside another CPU-heavy job only the first is fair.
3. At MiniC3D size for 16x112^2 inputs and 50 classes (3,647,666 parameters; random weights, 11
   epochs + the initialisation): bytes of one trajectory shard (float32 and bfloat16) against
   ``torch.save`` of the list of per-epoch parameter lists (the reference format), targets <= 1.0x
   and <= 0.5x; and the time to fetch one epoch (``read_epoch``: open, read, close) against
   ``torch.load`` of the whole file, target >= 10x. Both read from the page cache.

Prints a table and writes benchmarks/results/experts.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import ray
import torch

from raydd.data import open_prepared
from raydd.data.preparation import PrepareConfig, prepare
from raydd.experts.job import ExpertsConfig, settings_for, train_experts
from raydd.experts.parameters import ModelSpec, unflatten_parameters
from raydd.experts.trainer import ExpertTask, model_options, run_expert
from raydd.experts.trajectories import Trajectory, read_epoch, shard_name, write_trajectory
from raydd.layout import StoreLayout
from raydd.storage import atomic_writer, resolve

MINIC3D_PARAMS = 3_647_666
RAY_WORKER_NICENESS = 15  # Ray starts its workers at nice 15 (RAY_worker_niceness)


def timed(function) -> float:  # noqa: ANN001
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def fresh_store(root: Path, name: str, prepared: str) -> str:
    """A new store at ROOT/NAME holding the built-in dataset of the store ``prepared``."""
    store = StoreLayout.of(str(root / name))
    shutil.copytree(StoreLayout.of(prepared).dataset("builtin").path, store.dataset("builtin").path)
    return store.root.uri


def _plain_expert(task: ExpertTask, niceness: int, results: multiprocessing.Queue) -> None:
    os.nice(niceness)
    torch.set_num_threads(1)
    warm = dataclasses.replace(
        task, settings=dataclasses.replace(task.settings, epochs=1), folder_uri=task.folder_uri + "-warm"
    )
    run_expert(warm)  # imports and first-use kernel set-up, as the warm Ray workers have already done
    results.put(timed(lambda: run_expert(task)))


def plain_seconds(task: ExpertTask, niceness: int) -> float:
    """One expert trained by a plain call of the trainer in a fresh process at ``niceness`` (timed inside it)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_plain_expert, args=(task, niceness, results))
    process.start()
    seconds = results.get(timeout=600)
    process.join()
    return seconds


def ray_numbers(root: Path, width: int, epochs: int, count: int) -> dict[str, float]:
    prepare(PrepareConfig(store=str(root / "prepared")))
    datasets = str(root / "prepared")
    base = dict(model="minic3d", width=width, epochs=epochs, experiment="bench-experts")
    train_experts(
        ExpertsConfig(store=fresh_store(root, "warm", datasets), num_experts=2, **{**base, "epochs": 1})
    )  # start workers, MLflow db
    config = ExpertsConfig(store=fresh_store(root, "plain", datasets), num_experts=1, **base)
    task = ExpertTask(
        0,
        settings_for(config, open_prepared(StoreLayout.of(config.store).dataset("builtin").uri)),
        StoreLayout.of(config.store).dataset("builtin").uri,
        "",
    )
    plain = {
        n: plain_seconds(dataclasses.replace(task, folder_uri=f"{config.store}/experts/nice{n}"), n)
        for n in (RAY_WORKER_NICENESS, 0)
    }
    config = ExpertsConfig(store=fresh_store(root, "ray", datasets), num_experts=1, workers=1, **base)
    through_ray = timed(lambda: train_experts(config))
    one = ExpertsConfig(store=fresh_store(root, "one", datasets), num_experts=count, workers=1, **base)
    two = ExpertsConfig(store=fresh_store(root, "two", datasets), num_experts=count, workers=2, **base)
    one_s, two_s = timed(lambda: train_experts(one)), timed(lambda: train_experts(two))
    return {
        "in_process_s": plain[RAY_WORKER_NICENESS],
        "in_process_nice0_s": plain[0],
        "ray_s": through_ray,
        "overhead_one_invocation": through_ray / plain[RAY_WORKER_NICENESS] - 1,
        # per trajectory, from the 1-worker run: the invocation's fixed costs (MLflow run, Ray scheduling)
        # spread over its experts
        "overhead": one_s / count / plain[RAY_WORKER_NICENESS] - 1,
        "per_hour_1_worker": count * 3600 / one_s,
        "per_hour_2_workers": count * 3600 / two_s,
        "speedup": one_s / two_s,
    }


def storage_numbers(root: Path, epochs: int) -> dict[str, float]:
    spec = ModelSpec.of("minic3d", num_classes=50, clip_shape=(16, 112, 112, 3), options=model_options("minic3d", 128))
    assert spec.num_params == MINIC3D_PARAMS, spec.num_params
    generator = torch.Generator().manual_seed(0)
    vectors = [torch.randn(spec.num_params, generator=generator) * 0.05 for _ in range(epochs + 1)]
    sizes = {}
    for dtype in ("float32", "bfloat16"):
        location = resolve(str(root / dtype)).child(shard_name(0))
        with atomic_writer(location) as handle:
            write_trajectory(handle, spec, vectors, dtype=dtype, metadata={"expert": 0, "seed": 0})
        sizes[dtype] = os.path.getsize(location.path)
    reference = root / "reference.pt"  # the reference buffer format: per epoch, a list of per-parameter tensors
    torch.save([[p.clone() for p in unflatten_parameters(v, spec).values()] for v in vectors], reference)
    sizes["torch"] = os.path.getsize(reference)
    folder = str(root / "float32")
    assert torch.equal(read_epoch(folder, 0, 5), vectors[5])
    fetch = statistics.median(timed(lambda t=t: read_epoch(folder, 0, t)) for t in list(range(epochs + 1)) * 2)
    with Trajectory(resolve(folder).child(shard_name(0))) as trajectory:
        served = statistics.median(timed(lambda t=t: trajectory.epoch(t)) for t in list(range(epochs + 1)) * 2)
    load = statistics.median(timed(lambda: torch.load(reference)) for _ in range(3))
    return {
        "shard_bytes": sizes["float32"],
        "shard_bf16_bytes": sizes["bfloat16"],
        "torch_save_bytes": sizes["torch"],
        "bytes_ratio": sizes["float32"] / sizes["torch"],
        "bf16_bytes_ratio": sizes["bfloat16"] / sizes["torch"],
        "read_epoch_s": fetch,
        "open_trajectory_epoch_s": served,
        "torch_load_s": load,
        "fetch_speedup": load / fetch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=64, help="MiniC3D width of the Ray part's experts")
    parser.add_argument("--epochs", type=int, default=11)
    parser.add_argument("--experts", type=int, default=4, help="experts per throughput measurement")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/experts.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="raydd-bench-experts-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    try:
        stored = storage_numbers(root / "storage", args.epochs)
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        parallel = ray_numbers(root / "ray", args.width, args.epochs, args.experts)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        (
            f"trajectories/hour, 1 worker ({args.experts} MiniC3D-{args.width} experts, {args.epochs} epochs)",
            f"{parallel['per_hour_1_worker']:.0f}",
            "",
            "",
        ),
        ("trajectories/hour, 2 workers", f"{parallel['per_hour_2_workers']:.0f}", "", ""),
        ("speedup 2 workers / 1", f"{parallel['speedup']:.2f} x", ">= 1.70 x", parallel["speedup"] >= 1.7),
        ("one expert, plain in-process loop at nice 0", f"{parallel['in_process_nice0_s']:.2f} s", "", ""),
        (
            f"one expert, plain in-process loop at nice {RAY_WORKER_NICENESS} (as Ray's workers)",
            f"{parallel['in_process_s']:.2f} s",
            "",
            "",
        ),
        ("one expert through the command (Ray task, MLflow, manifest)", f"{parallel['ray_s']:.2f} s", "", ""),
        ("  overhead of that single-expert invocation", f"{100 * parallel['overhead_one_invocation']:.1f} %", "", ""),
        (
            "Ray overhead per trajectory (1-worker run of 4 vs plain loop)",
            f"{100 * parallel['overhead']:.1f} %",
            "<= 10 %",
            parallel["overhead"] <= 0.10,
        ),
        (
            f"shard bytes, float32 ({MINIC3D_PARAMS:,} params x {args.epochs + 1})",
            f"{stored['shard_bytes'] / 1e6:.1f} MB",
            "",
            "",
        ),
        ("torch.save of the per-epoch tensor lists", f"{stored['torch_save_bytes'] / 1e6:.1f} MB", "", ""),
        ("shard / torch.save, float32", f"{stored['bytes_ratio']:.5f} x", "<= 1.00 x", stored["bytes_ratio"] <= 1.0),
        (
            "shard / torch.save, bfloat16",
            f"{stored['bf16_bytes_ratio']:.5f} x",
            "<= 0.50 x",
            stored["bf16_bytes_ratio"] <= 0.5,
        ),
        ("read_epoch (open, read one epoch, close)", f"{1e3 * stored['read_epoch_s']:.1f} ms", "", ""),
        ("one epoch from an open Trajectory", f"{1e3 * stored['open_trajectory_epoch_s']:.1f} ms", "", ""),
        ("torch.load of the whole file", f"{1e3 * stored['torch_load_s']:.1f} ms", "", ""),
        (
            "fetch speedup torch.load / read_epoch",
            f"{stored['fetch_speedup']:.1f} x",
            ">= 10 x",
            stored["fetch_speedup"] >= 10,
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'value':>12}  {'target':>10}  status")
    for name, value, target, status in rows:
        verdict = "" if status == "" else ("PASS" if status else "FAIL")
        print(f"{name:<{width}}  {value:>12}  {target:>10}  {verdict}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"settings": vars(args) | {"output": str(args.output)}, **parallel, **stored}, indent=2)
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
