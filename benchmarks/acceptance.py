"""Acceptance of distillation on the built-in dataset (issue 6): DM and MTT at IPC 1 and 5, each
static-dynamic and naive, against random real clips at the same IPC; MiniC3D, mean ± std over runs,
with the appearance (static) and motion (dynamic) class groups.

    .venv/bin/python benchmarks/acceptance.py                       # the README table (~1 h on 2 cores)
    .venv/bin/python benchmarks/acceptance.py --methods dm --ipc 1  # one block

Prints a Markdown table and writes benchmarks/results/acceptance.json. Every number is on the real
test split, final epoch, with no selection on it; presets were chosen on the training split.
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

from raydd.pipeline import PipelineConfig, run_pipeline


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["dm", "mtt"])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=None, help="distillation iterations per stage (default: the builtin presets')")
    parser.add_argument("--store", default=None, help="store to use (default: a temporary folder)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/acceptance.json"))
    return parser.parse_args()


def cell(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key + '_mean']:.1f} ± {metrics[key + '_std']:.1f}"


def main() -> None:
    args = parse_args()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    store = args.store or tempfile.mkdtemp(prefix="raydd-acceptance-")
    results, started = [], time.perf_counter()
    for method in args.methods:
        for ipc in args.ipc:
            config = PipelineConfig(method=method, ipc=ipc, store=store, eval_runs=args.runs, eval_epochs=args.eval_epochs, iterations=args.iterations)
            rows = run_pipeline(config)
            sd, naive, random = rows[f"{method} static-dynamic"], rows[f"{method} naive"], rows["random real clips"]
            results.append({
                "method": method, "ipc": ipc, "rows": rows,
                "static_dynamic_beats_random": sd["metrics"]["top1_mean"] > random["metrics"]["top1_mean"],
                "naive_beats_random": naive["metrics"]["top1_mean"] > random["metrics"]["top1_mean"],
                "static_dynamic_at_least_naive": sd["metrics"]["top1_mean"] >= naive["metrics"]["top1_mean"] and sd["storage_ratio"] <= naive["storage_ratio"],
            })  # fmt: skip
    lines = [
        f"| method | IPC | training set | storage vs IPC videos | top-1 % | static classes % | dynamic classes % |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for name, row in result["rows"].items():
            m = row["metrics"]
            lines.append(f"| {result['method']} | {result['ipc']} | {name} | {row['storage_ratio']:.3f}x | {cell(m, 'top1')} | {cell(m, 'static_top1')} | {cell(m, 'dynamic_top1')} |")
    claims = [
        f"{r['method']} IPC {r['ipc']}: static-dynamic > random {'PASS' if r['static_dynamic_beats_random'] else 'FAIL'}, "
        f"naive > random {'PASS' if r['naive_beats_random'] else 'FAIL'}, static-dynamic >= naive at <= storage {'PASS' if r['static_dynamic_at_least_naive'] else 'FAIL'}"
        for r in results
    ]  # fmt: skip
    print("\n".join(["", *lines, "", *claims, f"\n{time.perf_counter() - started:.0f} s in all"]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"results": results, "runs": args.runs, "eval_epochs": args.eval_epochs, "seconds": time.perf_counter() - started}, indent=2))
    ray.shutdown()


if __name__ == "__main__":
    main()
