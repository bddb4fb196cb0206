"""Tiny real inputs for the distillation tests, written in this process (no Ray): the built-in dataset
(10 classes of 4 x 16 x 16 clips) and expert trajectories of seeded parameter vectors."""

from __future__ import annotations

import torch

from raydd.data.ingest import assemble_manifest, plan_shards, write_shard
from raydd.data.layouts import index_source
from raydd.experts.trainer import model_options
from raydd.experts.trajectories import (
    ModelSpec,
    TrajectoryRecord,
    experts_manifest,
    flatten_parameters,
    shard_name,
    write_trajectory,
)
from raydd.prepare import PrepareConfig
from raydd.storage import ShardRecord, atomic_writer, resolve, write_manifest

CLASSES, FRAMES, SIDE = 10, 4, 16
CLIP_SHAPE = (FRAMES, SIDE, SIDE, 3)


def write_builtin(store: str) -> str:
    """The shard writers that ``prepare`` runs on Ray, run here; returns the dataset's URI."""
    spec = PrepareConfig(store=store, frames=FRAMES, height=SIDE, width=SIDE).spec()
    target = resolve(store).child("datasets", spec.name)
    index = index_source(spec, None)
    results = [
        write_shard(spec, plan, target.uri, None, len(index.classes)) for plan in plan_shards(spec, index, 256.0)
    ]
    write_manifest(target, assemble_manifest(spec, index, results, 0.0))
    return target.uri


def write_experts(
    folder_uri: str,
    *,
    model: str = "minic3d",
    width: int = 8,
    num_experts: int = 2,
    epochs: int = 3,
    drift: float = 0.0005,
) -> ModelSpec:
    """An experts folder whose trajectories start at a real initialisation and drift by seeded noise:
    what MTT reads from them is exactly what a trained expert would give it, at no training cost."""
    spec = ModelSpec.of(model, num_classes=CLASSES, clip_shape=CLIP_SHAPE, options=model_options(model, width))
    folder = resolve(folder_uri)
    records = []
    for expert in range(num_experts):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(expert)
            vector_P = flatten_parameters(spec.build())
        noise = torch.Generator().manual_seed(100 + expert)
        epochs_P = [vector_P]
        for _ in range(epochs):
            epochs_P.append(epochs_P[-1] + drift * torch.randn(spec.num_params, generator=noise))
        location = folder.child(shard_name(expert))
        with atomic_writer(location) as handle:
            write_trajectory(handle, spec, epochs_P, dtype="float32", metadata={"expert": expert, "seed": expert})
        shard = ShardRecord(location.name, len(epochs_P), handle.bytes_written, handle.hexdigest())
        records.append(TrajectoryRecord(expert, expert, shard, 0.0, 0.0, 0.0))
    write_manifest(folder, experts_manifest({"model": spec.to_dict()}, records))
    return spec


def write_stages_store(root: str) -> str:
    """The store every stage of every method runs from: the built-in dataset, MiniC3D experts (naive, stage 2),
    ConvNet experts (stage 1) and two stills a class (stage 2's static images); returns ``root``."""
    from raydd.distill.artifact import write_static

    write_builtin(root)
    write_experts(f"{root}/experts/minic3d")
    write_experts(f"{root}/experts/convnet", model="convnet")
    static = torch.randn(CLASSES * 2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    write_static(f"{root}/static", static, torch.arange(CLASSES).repeat_interleave(2), {"method": "dm"})
    return root
