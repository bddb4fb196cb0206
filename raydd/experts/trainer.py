"""Train one expert trajectory on real data and write its shard. Pure torch: the entry module runs
:func:`run_expert` as a Ray task.

Experts follow MTT's ``buffer.py``: plain SGD at ``lr_teacher`` (momentum 0, no weight decay, no
schedule), batch 256, parameters recorded before training and after every epoch. Inputs are
standardised with the dataset's mean/std; the image ConvNet sees one random frame per clip (the
middle frame when tested), exactly as in evaluation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from raydd import faults
from raydd.data.reader import open_prepared
from raydd.devices import configure_cuda, pick_device
from raydd.errors import RayddError
from raydd.evaluation.fit import fit_epochs, frame_picker, score
from raydd.evaluation.sources import BatchSource, RealClips
from raydd.experts.trajectories import (
    ModelSpec,
    Trajectory,
    TrajectoryRecord,
    flatten_parameters,
    settings_difference,
    shard_name,
    write_trajectory,
)
from raydd.storage import Location, ShardRecord, atomic_writer, exists, resolve, sha256, size

EXPERT_MODELS = ("minic3d", "convnet")


def model_options(model: str, width: int) -> dict[str, Any]:
    """Factory options for a channel width: ConvNet's ``net_width``; MiniC3D's widths (w/2, w, w),
    so the default 128 gives both papers' networks."""
    return {"net_width": width} if model == "convnet" else {"widths": [max(1, width // 2), width, width]}


@dataclasses.dataclass(frozen=True)
class ExpertSettings:
    """What makes two trajectories comparable; stored in the manifest and in every shard."""

    model: ModelSpec
    dataset_sha256: str
    epochs: int
    lr_teacher: float
    momentum: float
    weight_decay: float
    batch_size: int
    dtype: str
    seed: int  # expert i uses seed + i

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "model": self.model.to_dict()}


@dataclasses.dataclass(frozen=True)
class ExpertTask:
    expert: int
    settings: ExpertSettings
    dataset_uri: str
    folder_uri: str  # STORE/experts/DATASET/MODEL
    device: str = "auto"
    threads: int = 1

    @property
    def seed(self) -> int:
        return self.settings.seed + self.expert


@dataclasses.dataclass(frozen=True)
class ExpertResult:
    record: TrajectoryRecord
    reused: bool  # found complete in the store (a previous run finished it but not its manifest)


def train_expert(
    model: nn.Module,
    train: BatchSource,
    settings: ExpertSettings,
    *,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[int, torch.Tensor], None],
    expert: int = 0,
) -> float:
    """Train ``model`` in place; ``on_epoch(t, flat_parameters)`` for t = 0 (initial) .. epochs.
    Returns the training accuracy of the last epoch."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr_teacher, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    picker = frame_picker(settings.model.name)
    on_epoch(0, flatten_parameters(model))
    history = fit_epochs(
        model,
        train,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        generator=torch.Generator().manual_seed(seed),
        device=device,
        to_input=lambda videos: picker(videos, True),
        optimizer_for=lambda epoch: optimizer,
        diverged=lambda epoch: (
            f"non-finite training loss at epoch {epoch + 1} of expert {expert} (lr {settings.lr_teacher:g}): "
            "lower --lr-teacher"
        ),
        on_epoch=lambda epoch, stats: on_epoch(epoch + 1, flatten_parameters(model)),
    )
    return history[-1].accuracy if history else 0.0


def run_expert(task: ExpertTask, on_epoch: Callable[[int, torch.Tensor], None] | None = None) -> ExpertResult:
    """Train expert ``task.expert`` and publish its shard in one atomic write (or reuse a finished one)."""
    started = time.perf_counter()
    location = resolve(task.folder_uri).child(shard_name(task.expert))
    found = _finished(task, location)
    if found is not None:
        return ExpertResult(found, reused=True)
    torch.set_num_threads(max(1, task.threads))
    device = pick_device(task.device)
    configure_cuda(device, fixed_shapes=False)
    dataset = open_prepared(task.dataset_uri)
    train = RealClips(dataset.split("train"), dataset.mean, dataset.std)
    test = RealClips(dataset.split("test"), dataset.mean, dataset.std)
    spec = task.settings.model
    torch.manual_seed(task.seed)  # initialisation and frame picks
    model = spec.build().to(device)
    keep = torch.bfloat16 if task.settings.dtype == "bfloat16" else torch.float32
    epochs: list[torch.Tensor] = []

    def record(epoch: int, vector_P: torch.Tensor) -> None:
        epochs.append(vector_P.to(keep))
        if on_epoch is not None:
            on_epoch(epoch, vector_P)
        if epoch == 1:  # mid-trajectory: the first epoch trained, nothing published
            faults.fire("fail_expert", task.expert, scope=task.folder_uri)

    train_accuracy = train_expert(
        model, train, task.settings, seed=task.seed, device=device, on_epoch=record, expert=task.expert
    )
    test_accuracy = score(model, test, spec.num_classes, device, frame_picker(spec.name))[0]
    seconds = time.perf_counter() - started
    info = {
        "expert": task.expert,
        "seed": task.seed,
        "settings": task.settings.to_dict(),
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "seconds": seconds,
    }
    with atomic_writer(location) as handle:
        write_trajectory(handle, spec, epochs, dtype=task.settings.dtype, metadata=info)
    shard = ShardRecord(location.name, len(epochs), handle.bytes_written, handle.hexdigest())
    return ExpertResult(
        TrajectoryRecord(task.expert, task.seed, shard, train_accuracy, test_accuracy, seconds), reused=False
    )


def _finished(task: ExpertTask, location: Location) -> TrajectoryRecord | None:
    """A complete shard of this very expert and settings left by a run that did not publish its manifest."""
    if not exists(location):
        return None
    try:
        with Trajectory(location) as trajectory:
            info = trajectory.metadata
    except RayddError:
        return None  # damaged and unlisted: train it again
    same = not settings_difference(info.get("settings", {}), task.settings.to_dict())
    if info.get("expert") != task.expert or not same or trajectory.num_epochs != task.settings.epochs:
        return None
    shard = ShardRecord(location.name, task.settings.epochs + 1, size(location), sha256(location))
    return TrajectoryRecord(
        task.expert, task.seed, shard, info["train_accuracy"], info["test_accuracy"], info["seconds"]
    )
