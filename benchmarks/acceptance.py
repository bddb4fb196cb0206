"""Acceptance of distillation on the built-in dataset (issue 12): each method at each IPC, its static-dynamic
set, its naive set, the static-dynamic set's stage-1 stills alone and random real clips at the same IPC, under
raydd's evaluation protocol; MiniC3D, mean ± std over runs, with the appearance (static) and motion (dynamic)
class groups and the gain over random real clips.

    .venv/bin/python benchmarks/acceptance.py                                  # the README table
    .venv/bin/python benchmarks/acceptance.py --methods dm --ipc 1   # one block

Each block is ``python -m raydd.pipeline`` (Ray, Ray Train, MLflow). A block records its protocol's name: blocks
evaluated under another (an older raydd's) are run again. Results are written after every block to
benchmarks/results/acceptance.json, and blocks already there are skipped (``--fresh`` starts over), so a long
run can be stopped and resumed. Every number is on the real test split, final epoch, with no selection on it;
presets were chosen on a validation split carved out of train.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import ray

from raydd.evaluation.protocols import FREPO, PROTOCOL, STANDARD
from raydd.evaluation.report import RANDOM_REAL_ROW
from raydd.parallel import start_local_ray
from raydd.pipeline import PipelineConfig, run_pipeline

STILLS_ROW = "stills only (stage 1)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["dm", "dc", "mtt", "frepo"])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--eval-epochs", type=int, default=100)
    parser.add_argument(
        "--eval-preset", choices=(STANDARD, FREPO), default=STANDARD, help="lr preset of every row (raydd.pipeline)"
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="iterations per stage (default: the builtin presets')"
    )
    parser.add_argument("--store", default=None, help="store to use (default: a temporary folder)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/acceptance.json"))
    parser.add_argument("--fresh", action="store_true", help="ignore the blocks already in --output")
    return parser.parse_args()


def cell(metrics: dict[str, Any], key: str) -> str:
    return f"{metrics[key + '_mean']:.1f} ± {metrics[key + '_std']:.1f}"


def block_key(block: dict[str, Any]) -> tuple[str, int, str, str]:
    """Blocks written before ``eval_preset`` was recorded used each set's own preset: FRePo's for FRePo sets."""
    preset = block.get("eval_preset", FREPO if block["method"] == "frepo" else STANDARD)
    return block["method"], block["ipc"], block["protocol"], preset


def judge(method: str, rows: dict[str, Any]) -> dict[str, bool]:
    top1 = {name: row["metrics"]["top1_mean"] for name, row in rows.items()}
    sd, naive = rows[f"{method} static-dynamic"], rows[f"{method} naive"]
    return {
        "static_dynamic_at_least_naive": top1[f"{method} static-dynamic"] >= top1[f"{method} naive"]
        and sd["storage_ratio"] <= naive["storage_ratio"],
        "both_above_random": min(top1[f"{method} static-dynamic"], top1[f"{method} naive"]) > top1[RANDOM_REAL_ROW],
        "stage_2_adds_motion": sd["metrics"]["dynamic_top1_mean"] > rows[STILLS_ROW]["metrics"]["dynamic_top1_mean"],
    }


def table(blocks: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| protocol | method | IPC | training set | storage | top-1 % | static % | dynamic % | gain over random |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for block in blocks:
        random = block["rows"][RANDOM_REAL_ROW]["metrics"]["top1_mean"]
        for name, row in block["rows"].items():
            m = row["metrics"]
            lines.append(
                f"| {block['protocol']} | {block['method']} | {block['ipc']} | {name} | {row['storage_ratio']:.3f}x | "
                f"{cell(m, 'top1')} | {cell(m, 'static_top1')} | {cell(m, 'dynamic_top1')} | "
                f"{m['top1_mean'] - random:+.1f} |"
            )
    return lines


def main() -> None:
    args = parse_args()
    done = [] if args.fresh or not args.output.exists() else json.loads(args.output.read_text())["blocks"]
    start_local_ray(num_cpus=2, configure_logging=False)  # with its dashboard: Ray Train's cleaner asks it
    store = args.store or tempfile.mkdtemp(prefix="raydd-acceptance-")
    started = time.perf_counter()
    failed: list[str] = []
    protocol = PROTOCOL.name
    for method in args.methods:
        for ipc in args.ipc:
            key = (method, ipc, protocol, args.eval_preset)
            if any(block_key(b) == key for b in done):
                continue
            config = PipelineConfig(
                method=method,
                ipc=ipc,
                store=store,
                eval_runs=args.runs,
                eval_epochs=args.eval_epochs,
                eval_lr_schedule=args.eval_preset,
                iterations=args.iterations,
            )
            block_started = time.perf_counter()
            try:
                rows = run_pipeline(config)
            except Exception as error:  # one failed block must not lose the others: record it, go on
                failed.append(f"{protocol} {method} IPC {ipc}: {type(error).__name__}: {error}")
                print(f"block failed, going on: {failed[-1]}", flush=True)
                continue
            block = {"method": method, "ipc": ipc, "protocol": protocol, "eval_preset": args.eval_preset}
            block |= {"rows": rows, **judge(method, rows)}
            done = [b for b in done if block_key(b)[:3] != key[:3]]  # a block run again under another preset
            done.append({**block, "seconds": time.perf_counter() - block_started})
            args.output.parent.mkdir(parents=True, exist_ok=True)
            settings = {"runs": args.runs, "eval_epochs": args.eval_epochs, "iterations": args.iterations}
            args.output.write_text(json.dumps({"blocks": done, **settings}, indent=2))
    claims = [
        f"{b['protocol']} {b['method']} IPC {b['ipc']}: static-dynamic >= naive at <= storage "
        f"{'PASS' if b['static_dynamic_at_least_naive'] else 'FAIL'}, both > random "
        f"{'PASS' if b['both_above_random'] else 'FAIL'}, static-dynamic > stills only on dynamic classes "
        f"{'PASS' if b['stage_2_adds_motion'] else 'FAIL'}"
        for b in done
    ]
    failures = [f"FAILED {line}" for line in failed]
    print("\n".join(["", *table(done), "", *claims, *failures, f"\n{time.perf_counter() - started:.0f} s in this run"]))
    ray.shutdown()
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
