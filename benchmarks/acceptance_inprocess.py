"""The acceptance table of benchmarks/acceptance.py, computed in one process without Ray or MLflow.

Same stages, methods, presets and evaluation code as ``python -m raydd.pipeline`` (one worker, so the
same computation as one Ray Train worker), for a machine that has torch but not the cluster stack --
e.g. a GPU box, where the paper's 500 evaluation epochs take seconds:

    python benchmarks/acceptance_inprocess.py --dataset-dir raydd-store/datasets/builtin --device cuda --eval-epochs 500

The prepared dataset is read from ``--dataset-dir`` (prepare it first with ``python -m raydd.prepare``);
experts are trained in-process with the built-in MTT settings of ``raydd.pipeline``. Prints a Markdown
table and writes JSON (``--output``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from raydd.data.reader import PreparedDataset, open_prepared
from raydd.devices import pick_device
from raydd.distill.artifact import write_static, write_static_dynamic_state
from raydd.distill.loop import SingleProcess
from raydd.distill.methods.catalog import method_info
from raydd.distill.presets import table_preset
from raydd.distill.stages import DYNAMIC, NAIVE, STATIC, StageSpec, build_stage
from raydd.distilled_set import write_distilled
from raydd.evaluation.report import summarize
from raydd.evaluation.runs import DISTILLED, RANDOM_REAL, RunTask, execute
from raydd.evaluation.train import TrainSettings
from raydd.experts.trainer import ExpertSettings, ExpertTask, model_options, run_expert
from raydd.experts.trajectories import ModelSpec, experts_manifest
from raydd.layout import StoreLayout
from raydd.storage import write_manifest


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", nargs="+", default=["dm", "mtt"])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--iterations", type=int, default=None, help="per stage (default: the builtin presets')")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=500)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/acceptance_inprocess.json"))
    return parser.parse_args()


def train_experts(dataset: PreparedDataset, store: Path, count: int, device: str) -> None:
    """The experts raydd.pipeline trains for the built-in dataset (width 32, batch 32, lr 0.05, 11 epochs)."""
    for model in ("minic3d", "convnet"):
        spec = ModelSpec.of(
            model,
            num_classes=len(dataset.classes),
            clip_shape=dataset.manifest.metadata["clip_shape"],
            options=model_options(model, 32),
        )
        settings = ExpertSettings(spec, dataset.manifest.content_sha256(), 11, 0.05, 0.0, 0.0, 32, "float32", 0)
        folder = StoreLayout.of(str(store)).experts(dataset.spec.name, model)
        records = [
            run_expert(ExpertTask(e, settings, str(dataset.location.uri), folder.uri, device)).record
            for e in range(count)
        ]
        write_manifest(folder, experts_manifest(settings.to_dict(), records))
        print(f"experts {model}: test top-1 {[round(100 * r.test_accuracy, 1) for r in records]}", flush=True)


def run_stage(spec: StageSpec, device: torch.device) -> tuple[object, list[float]]:
    distiller = build_stage(spec, SingleProcess(), device)
    losses = [distiller.step(i).loss for i in range(spec.preset.iterations)]
    return distiller, losses


def distil(
    method: str,
    paradigm: str,
    ipc: int,
    iterations: int | None,
    dataset: PreparedDataset,
    store: Path,
    device: torch.device,
) -> tuple[str, float, float]:
    preset = table_preset(method, paradigm, "builtin", ipc)
    preset = dataclasses.replace(preset, iterations=iterations or preset.iterations)
    layout = StoreLayout.of(str(store))
    uri = layout.distilled(dataset.spec.name, f"{method}-{paradigm}-ipc{ipc}").uri
    experts = {model: layout.experts(dataset.spec.name, model).uri for model in ("minic3d", "convnet")}
    base = StageSpec(NAIVE, method, str(dataset.location.uri), ipc, preset, experts_uri=experts["minic3d"])
    started = time.perf_counter()
    if paradigm == "naive":
        distiller, _ = run_stage(base, device)
        manifest = write_distilled(
            uri,
            distiller.synthetic.render().cpu(),
            distiller.synthetic.labels.cpu(),
            classes=dataset.classes,
            dataset_uri=str(dataset.location.uri),
            method=f"{method}-naive",
            ipc=ipc,
        )
    else:
        still, _ = run_stage(dataclasses.replace(base, stage=STATIC, experts_uri=experts["convnet"]), device)
        static_uri = layout.static(dataset.spec.name, f"{method}-ipc{ipc}").uri
        write_static(static_uri, still.synthetic.render().cpu(), still.synthetic.labels.cpu(), {})
        distiller, _ = run_stage(dataclasses.replace(base, stage=DYNAMIC, static_uri=static_uri), device)
        state = {k: v.cpu() for k, v in distiller.synthetic.state_dict().items()}
        manifest = write_static_dynamic_state(uri, state, preset, dataset, method=method, ipc=ipc, extra={})
    return uri, manifest.metadata["storage_ratio"], time.perf_counter() - started


def evaluate(
    kind: str, data_uri: str, test_uri: str, ipc: int, args: argparse.Namespace, dataset: PreparedDataset
) -> dict[str, float]:
    results = [
        execute(
            RunTask(
                run,
                TrainSettings("minic3d", args.eval_epochs, 0.01, 256, seed=run),
                kind,
                data_uri,
                test_uri,
                random_ipc=ipc if kind == RANDOM_REAL else 0,
                device=args.device,
            )
        )
        for run in range(args.runs)
    ]
    return summarize(results, dataset.classes, dataset.spec.static_classes)


def main() -> None:
    args = parse_args()
    device = pick_device(args.device)
    store = Path(tempfile.mkdtemp(prefix="raydd-acceptance-"))
    dataset_folder = StoreLayout.of(str(store)).dataset("builtin")
    shutil.copytree(args.dataset_dir, dataset_folder.path)
    dataset = open_prepared(dataset_folder.uri)
    test_uri = str(dataset.location.uri)
    started = time.perf_counter()
    if any(method_info(method).needs_experts for method in args.methods):
        train_experts(dataset, store, args.experts, args.device)
    rows = []
    for method in args.methods:
        for ipc in args.ipc:
            block = {}
            for paradigm in ("static-dynamic", "naive"):
                uri, ratio, seconds = distil(method, paradigm, ipc, args.iterations, dataset, store, device)
                block[f"{method} {paradigm}"] = {
                    "storage_ratio": ratio,
                    "distill_seconds": seconds,
                    "metrics": evaluate(DISTILLED, uri, test_uri, ipc, args, dataset),
                }
                print(f"{method} {paradigm} IPC {ipc}: {block[f'{method} {paradigm}']}", flush=True)
            block["random real clips"] = {
                "storage_ratio": 1.0,
                "metrics": evaluate(RANDOM_REAL, test_uri, test_uri, ipc, args, dataset),
            }
            rows.append({"method": method, "ipc": ipc, "rows": block})
            write_json(
                args, rows, device, time.perf_counter() - started
            )  # after every block: a cut-short run keeps what it did
    lines = [
        "| method | IPC | training set | storage vs IPC videos | top-1 % | static classes % | dynamic classes % |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for name, cell in row["rows"].items():
            m = cell["metrics"]
            fmt = lambda k, m=m: f"{m[k + '_mean']:.1f} ± {m[k + '_std']:.1f}"  # noqa: E731
            lines.append(
                f"| {row['method']} | {row['ipc']} | {name} | {cell['storage_ratio']:.3f}x | {fmt('top1')} | "
                f"{fmt('static_top1')} | {fmt('dynamic_top1')} |"
            )
    print("\n".join(["", *lines, f"\n{time.perf_counter() - started:.0f} s on {device}"]))
    write_json(args, rows, device, time.perf_counter() - started)


def write_json(args: argparse.Namespace, rows: list[dict], device: torch.device, seconds: float) -> None:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "rows": rows,
                "device": str(device),
                "runs": args.runs,
                "eval_epochs": args.eval_epochs,
                "iterations": args.iterations,
                "seconds": seconds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
