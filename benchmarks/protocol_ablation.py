"""Which part of the evaluation protocol a training set's score depends on: raydd's old recipe with one part of the
reference's added at a time, the reference itself (test batches standardised by their own statistics), and raydd's
protocol (the reference's recipe, each test clip standardised with the training batches' statistics).

    .venv/bin/python benchmarks/protocol_ablation.py --data STORE/distilled/builtin/dc-static-dynamic-ipc5-...
    .venv/bin/python benchmarks/protocol_ablation.py --data STORE/datasets/builtin --random-ipc 5

Variants (:data:`VARIANTS`): raydd's old recipe (:data:`RAYDD_RECIPE`); + re-pairing (a static-dynamic set's stills
and memories drawn anew on every fetch); + per-batch re-standardisation; + the dropout-max head; + the reference's
passes and lr cut (epochs + 1 passes, a fresh SGD at the cut); the reference; the reference with each test clip
standardised by its own statistics; raydd's protocol. Each variant trains ``--runs`` fresh MiniC3Ds (seeds 0..runs-1, as
``raydd.evaluate``) in this machine's processes, one thread each, and scores them on the test split, final epoch.
Prints a table (top-1, static and dynamic classes, mean ± std) and writes JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raydd.errors import RayddError  # noqa: E402
from raydd.evaluation.job import EvalConfig  # noqa: E402
from raydd.evaluation.plan import EvaluationPlan, plan_evaluation  # noqa: E402
from raydd.evaluation.protocols import PROTOCOL, Protocol  # noqa: E402
from raydd.evaluation.report import mean_std_text, summarize  # noqa: E402
from raydd.evaluation.runs import RunTask, execute  # noqa: E402
from raydd.evaluation.train import RunResult  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# raydd's recipe before 2026-12-07, no longer a protocol of raydd's: the clips as the dataset standardises them, a
# static-dynamic set rendered once from fixed (still, memory) pairs, MiniC3D's average head, ``epochs`` passes
# with the lr cut at half of them, test batches of 256.
RAYDD_RECIPE = Protocol(
    "raydd",
    restandardise_batches=False,
    repair_static_dynamic=False,
    head="average",
    extra_pass=False,
    fresh_optimizer_at_cut=False,
    test_batch_size=256,
)
VARIANTS: dict[str, Protocol] = {
    "raydd": RAYDD_RECIPE,
    "raydd + re-pairing": dataclasses.replace(RAYDD_RECIPE, name="raydd+repair", repair_static_dynamic=True),
    "raydd + re-standardised batches": dataclasses.replace(
        RAYDD_RECIPE, name="raydd+restd", restandardise_batches=True
    ),
    "raydd + dropout-max head": dataclasses.replace(RAYDD_RECIPE, name="raydd+head", head="dropout-max"),
    "raydd + reference passes and cut": dataclasses.replace(
        RAYDD_RECIPE, name="raydd+passes", extra_pass=True, fresh_optimizer_at_cut=True
    ),
    # The reference itself: test clips standardised with their test batch's statistics (transductive).
    "reference": dataclasses.replace(PROTOCOL, name="reference", test_statistics="batch"),
    "reference, test clips by their own stats": dataclasses.replace(
        PROTOCOL, name="reference+clip-stats", test_statistics="clip"
    ),
    "raydd's protocol (reference, test clips by train stats)": PROTOCOL,
}


def _run(job: tuple[RunTask, Protocol]) -> RunResult:
    import torch

    torch.set_num_threads(1)
    task, protocol = job
    return execute(task, protocol)


def _plan(args: argparse.Namespace, defaults: EvalConfig) -> EvaluationPlan:
    """The runs ``raydd.evaluate --lr-schedule standard`` would make of ``--data``, on CPU."""
    return plan_evaluation(
        data=args.data,
        test=None,
        model="minic3d",
        runs=args.runs,
        random_ipc=args.random_ipc,
        preset="standard",
        epochs=args.epochs,
        lr=None,
        batch_size=defaults.batch_size,
        momentum=defaults.momentum,
        weight_decay=defaults.weight_decay,
        seed=defaults.seed,
        device="cpu",
        stills_only=args.stills_only,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="distilled set or prepared dataset to train on")
    parser.add_argument("--random-ipc", type=int, default=0, help="with a prepared dataset: K random clips a class")
    parser.add_argument("--stills-only", action="store_true", help="a static-dynamic set's stills alone")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--processes", type=int, default=2, help="runs trained at once, one thread each")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/protocol_ablation.json)")
    args = parser.parse_args(argv)

    defaults = EvalConfig()  # raydd.evaluate's batch size, momentum, weight decay and seed
    try:
        plan = _plan(args, defaults)
    except RayddError as error:  # a --data that is not a prepared dataset or distilled set, a mismatched test split
        print(f"protocol_ablation: {error}", file=sys.stderr)
        return 1
    jobs = [(task, VARIANTS[name]) for name in args.variants for task in plan.tasks]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.processes, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(_run, jobs))
    rows = {}
    classes, static = plan.reference.classes, plan.reference.spec.static_classes
    for i, name in enumerate(args.variants):
        rows[name] = summarize(results[i * args.runs : (i + 1) * args.runs], classes, static)
    print(
        f"\n{args.data} ({plan.kind}), MiniC3D {args.epochs} epochs, lr 1e-2, {args.runs} runs, test split, final epoch"
    )
    print(f"{'protocol':56s} {'top-1':>12} {'static':>12} {'dynamic':>12}")
    for name, metrics in rows.items():
        cells = " ".join(f"{mean_std_text(metrics, k):>12}" for k in ("top1", "static_top1", "dynamic_top1"))
        print(f"{name:56s} {cells}")
    out = Path(args.out) if args.out else RESULTS / "protocol_ablation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"data": args.data, "kind": plan.kind, "runs": args.runs, "epochs": args.epochs, "rows": rows}
    record["seconds"] = time.perf_counter() - started
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
