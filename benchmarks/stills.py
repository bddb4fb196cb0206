"""Stage 1's still images by method: a frame-only ConvNet trained on the stills, and their value range.

    .venv/bin/python benchmarks/stills.py --store STORE --method dc                 # DC at its builtin preset
    .venv/bin/python benchmarks/stills.py --store STORE --method dm --clamp         # DM, stills kept in [0, 1]
    .venv/bin/python benchmarks/stills.py --store STORE --method random             # random real frames
    .venv/bin/python benchmarks/stills.py --store STORE --method dc --split val --lr-static 0.01

Per seed: stage 1 of ``--method`` at the builtin static-dynamic preset (``lr_static``, momentum, batch_real,
iterations from stage 1's method's row unless given), in this process, without Ray; then a fresh ConvNet (the
evaluation's frame-only probe, lr 0.01, 300 epochs) trained on the stills and scored on the middle frame of
every test clip (``--split test``), or on the held-out third of each class's train clips, distilled from the
other two thirds (``--split val``: for choosing settings; the test split never chooses anything).
``--clamp`` projects the stills into the data's range ([0, 1] before standardisation) after every step.
Prints one JSON line per seed and a summary line: top-1 (all, static classes, dynamic classes) mean ± std,
and the stills' std and range in standardised units (real frames: std ~1).
"""

from __future__ import annotations

import argparse
import json
import os
import time

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")


import numpy as np
import torch

from raydd.classes import random_per_class, shuffled_per_class
from raydd.data.reader import open_prepared
from raydd.distill.loop import SingleProcess
from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import resolve_presets
from raydd.distill.stages import STATIC, StageSpec, build_stage
from raydd.evaluation.sources import RealClips, TensorClips
from raydd.evaluation.train import TrainSettings, train_and_test
from raydd.layout import StoreLayout

CPU = torch.device("cpu")


def _split(dataset, split: str) -> tuple[np.ndarray | None, RealClips]:  # noqa: ANN001
    train = dataset.split("train")
    if split == "test":
        return None, RealClips(dataset.split("test"), dataset.mean, dataset.std)
    fit, held = [], []
    for rows in shuffled_per_class(train.labels, len(dataset.classes), 123):
        fit += list(rows[: 2 * len(rows) // 3])
        held += list(rows[2 * len(rows) // 3 :])
    return np.sort(fit), RealClips(train, dataset.mean, dataset.std, indices=np.sort(held))


def _stills(args: argparse.Namespace, dataset, fit: np.ndarray | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    train = dataset.split("train")
    classes = len(dataset.classes)
    if args.method == "random":
        rows = random_per_class(train.labels, 2 * args.ipc, classes, seed)
        clips = RealClips(train, dataset.mean, dataset.std, indices=rows if fit is None else np.intersect1d(rows, fit))
        videos, labels = clips.batch(torch.arange(len(clips)), CPU)
        return videos[:, :, videos.shape[2] // 2], labels
    flags = {k: getattr(args, k) for k in ("lr_static", "momentum", "iterations") if getattr(args, k) is not None}
    config = DistillConfig(
        dataset=args.dataset, store=args.store, ipc=args.ipc, method="dm", static_method=args.method, **flags
    )
    preset = resolve_presets(config).stage1
    spec = StageSpec(
        stage=STATIC, method=args.method, dataset_uri=dataset.location.uri, ipc=args.ipc, preset=preset, seed=seed
    )
    distiller = build_stage(spec, SingleProcess(), CPU, real_indices=fit)
    mean, std = torch.tensor(dataset.mean).view(1, -1, 1, 1), torch.tensor(dataset.std).view(1, -1, 1, 1)
    low, high = -mean / std, (1 - mean) / std
    for i in range(preset.iterations):
        distiller.step(i)
        if args.clamp:
            with torch.no_grad():
                distiller.synthetic.values.copy_(torch.maximum(torch.minimum(distiller.synthetic.values, high), low))
    return distiller.synthetic.values.detach().clone(), distiller.synthetic.labels.clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--dataset", default="builtin")
    parser.add_argument("--method", default="dc", choices=("dc", "dm", "mtt", "frepo", "random"))
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--lr-static", type=float)
    parser.add_argument("--momentum", type=float)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--clamp", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = open_prepared(StoreLayout.of(args.store).dataset(args.dataset).uri)
    fit, scored = _split(dataset, args.split)
    clip_shape = tuple(dataset.manifest.metadata["clip_shape"])
    static = set(dataset.spec.static_classes)
    groups = [i for i, name in enumerate(dataset.classes) if name in static]
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        started = time.perf_counter()
        stills, labels = _stills(args, dataset, fit, seed)
        videos = stills.unsqueeze(2).expand(-1, -1, clip_shape[0], -1, -1).contiguous()  # a still video per image
        settings = TrainSettings(model="convnet", epochs=300, lr=1e-2, batch_size=256, seed=seed)
        result = train_and_test(
            settings,
            TensorClips(videos, labels),
            scored,
            num_classes=len(dataset.classes),
            clip_shape=clip_shape,
            device=CPU,
            run=seed,
        )
        per_class = np.array(result.per_class)
        others = [i for i in range(len(per_class)) if i not in groups]
        row = {
            "seed": seed,
            "top1": 100 * result.top1,
            "static": 100 * per_class[groups].mean() if groups else float("nan"),
            "dynamic": 100 * per_class[others].mean(),
            "std": float(stills.std()),
            "min": float(stills.min()),
            "max": float(stills.max()),
            "seconds": time.perf_counter() - started,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)

    def cell(key: str) -> str:
        values = np.array([r[key] for r in rows])
        return f"{values.mean():.1f} ± {values.std():.1f}"

    print(
        f"{args.method}{' clamped' if args.clamp else ''} ({args.split}, {args.seeds} seeds): top-1 {cell('top1')}, "
        f"static {cell('static')}, "
        f"dynamic {cell('dynamic')}; stills std {np.mean([r['std'] for r in rows]):.2f}, "
        f"range [{min(r['min'] for r in rows):.1f}, {max(r['max'] for r in rows):.1f}]"
    )


if __name__ == "__main__":
    main()
