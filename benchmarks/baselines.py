"""Baselines on the built-in dataset: what every distilled set is measured against.

For MiniC3D, CNN+GRU and CNN+LSTM: accuracy when trained on the full training split and on K random
real clips per class (K = 1, 5, 10), plus the frame-only ConvNet probe on the full split. Each cell is
mean ± std over ``--runs`` runs (final epoch, real test split), with the static- and dynamic-group
accuracies that show whether a model uses motion.

    .venv/bin/python benchmarks/baselines.py                 # ~1 h on 2 cores (paper's epoch presets)
    .venv/bin/python benchmarks/baselines.py --runs 2 --full-epochs 30 --ipc-epochs 50   # the README table, ~20 min

Prints a Markdown table (pasted into the README) and writes benchmarks/results/baselines.json.
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

from raydd.evaluate import EvalConfig, evaluate
from raydd.layout import StoreLayout
from raydd.prepare import PrepareConfig, prepare


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--models", nargs="+", default=["minic3d", "cnn_gru", "cnn_lstm"])
    parser.add_argument(
        "--full-epochs", type=int, default=30, help="epochs on the full split (the presets are for tiny sets)"
    )
    parser.add_argument(
        "--ipc-epochs", type=int, default=None, help="epochs on random-IPC sets (default: the model's preset)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="32: the evaluation default (256) leaves 300 clips two steps an epoch",
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/baselines.json"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    store = tempfile.mkdtemp(prefix="raydd-baselines-")
    prepare(PrepareConfig(store=store))
    data = StoreLayout.of(store).dataset("builtin").uri
    rows = []
    jobs = (
        [(model, 0) for model in args.models]
        + [(model, k) for model in args.models for k in args.ipc]
        + [("convnet", 0)]
    )
    for model, ipc in jobs:
        epochs = args.full_epochs if ipc == 0 else args.ipc_epochs
        started = time.perf_counter()
        metrics = evaluate(
            EvalConfig(
                data=data,
                store=store,
                model=model,
                runs=args.runs,
                random_ipc=ipc,
                epochs=epochs,
                batch_size=args.batch_size,
                experiment="baselines",
            )
        )
        rows.append(
            {
                "model": model,
                "train": "full" if ipc == 0 else f"random IPC {ipc}",
                "epochs": epochs or "preset",
                "batch_size": args.batch_size,
                "seconds": time.perf_counter() - started,
                **metrics,
            }
        )
    header = "| model | training set | top-1 (%) | static classes (%) | dynamic classes (%) |\n|---|---|---|---|---|"
    lines = [header] + [
        f"| {'ConvNet, one frame' if r['model'] == 'convnet' else r['model']} | {r['train']} | {r['top1_mean']:.1f} "
        f"± {r['top1_std']:.1f} "
        f"| {r['static_top1_mean']:.1f} ± {r['static_top1_std']:.1f} | {r['dynamic_top1_mean']:.1f} ± "
        f"{r['dynamic_top1_std']:.1f} |"
        for r in rows
    ]
    table = "\n".join(lines)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"runs": args.runs, "rows": rows, "table": table}, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
