"""Train one fresh network on a batch source and score it on the test split, final epoch only.

There is no model selection on the test set (the reference's distillation scripts keep the best
evaluation over iterations; raydd reports the last epoch of one evaluation). The protocol
(:mod:`raydd.evaluation.protocols`) decides the passes, the lr cut, the batch re-standardisation and
MiniC3D's head. Image models (the frame-only ConvNet) see one random frame per clip
while training and the middle frame when tested.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from raydd.errors import RayddError
from raydd.evaluation.protocols import PROTOCOLS, RAYDD, Protocol
from raydd.evaluation.sources import BatchSource
from raydd.models.registry import IMAGE_MODELS, build_model


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    model: str
    epochs: int
    lr: float
    batch_size: int
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class RunResult:
    run: int
    top1: float
    top5: float
    top_k: int
    per_class: tuple[float, ...]
    losses: tuple[float, ...]  # mean training loss per epoch
    train_clips: int
    seconds: float


def frame_picker(model_name: str) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    if model_name not in IMAGE_MODELS:
        return lambda videos, training: videos

    def pick(videos_NCTHW: torch.Tensor, training: bool) -> torch.Tensor:
        n, _, t = videos_NCTHW.shape[:3]
        frame = (
            torch.randint(t, (n,), device=videos_NCTHW.device)
            if training
            else torch.full((n,), t // 2, device=videos_NCTHW.device)
        )
        return videos_NCTHW[torch.arange(n, device=videos_NCTHW.device), :, frame]

    return pick


def train_and_test(
    settings: TrainSettings,
    train: BatchSource,
    test: BatchSource,
    *,
    num_classes: int,
    clip_shape: tuple[int, int, int, int],
    device: torch.device,
    run: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    protocol: Protocol = PROTOCOLS[RAYDD],
) -> RunResult:
    """SGD (momentum, weight decay), lr x0.1 once (where the protocol says); returns final-epoch test accuracy."""
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    head = {"head": protocol.head} if settings.model == "minic3d" else {}
    model = build_model(settings.model, num_classes=num_classes, clip_shape=clip_shape, **head).to(device)

    def sgd(lr: float) -> torch.optim.Optimizer:
        momentum, weight_decay = settings.momentum, settings.weight_decay
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    optimizer = sgd(settings.lr)
    picker = frame_picker(settings.model)

    def to_input(videos: torch.Tensor, training: bool) -> torch.Tensor:
        return protocol.prepare(picker(videos, training))

    losses = []
    passes, cut = protocol.passes(settings.epochs), protocol.cut_at(settings.epochs)
    for epoch in range(passes):
        if epoch == cut:
            if protocol.fresh_optimizer_at_cut:
                optimizer = sgd(settings.lr * 0.1)
            else:
                for group in optimizer.param_groups:
                    group["lr"] = settings.lr * 0.1
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            videos, labels = train.batch(order[start : start + settings.batch_size], device)
            loss = F.cross_entropy(model(to_input(videos, True)), labels)
            if not math.isfinite(loss.item()):
                raise RayddError(
                    f"non-finite training loss at epoch {epoch + 1} of run {run} (lr {settings.lr:g}): lower --lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(labels), seen + len(labels)
        losses.append(total / seen)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    top1, top5, top_k, per_class = score(model, test, num_classes, device, to_input, protocol.test_batch_size)
    return RunResult(run, top1, top5, top_k, per_class, tuple(losses), len(train), time.perf_counter() - started)


@torch.no_grad()
def score(
    model: nn.Module,
    test: BatchSource,
    num_classes: int,
    device: torch.device,
    to_input,  # noqa: ANN001
    batch_size: int = 256,
) -> tuple[float, float, int, tuple[float, ...]]:
    model.eval()
    top_k = min(5, num_classes)
    correct1 = torch.zeros(num_classes)
    correct_k = 0
    for start in range(0, len(test), batch_size):
        videos, labels = test.batch(torch.arange(start, min(start + batch_size, len(test))), device)
        logits = model(to_input(videos, False))
        best = logits.topk(top_k, dim=1).indices
        hit1 = (best[:, 0] == labels).float().cpu()
        correct1 += torch.bincount(labels.cpu(), weights=hit1, minlength=num_classes)
        correct_k += (best == labels[:, None]).any(1).sum().item()
    counts = torch.bincount(test.labels, minlength=num_classes).clamp(min=1)
    return float(correct1.sum() / len(test)), correct_k / len(test), top_k, tuple((correct1 / counts).tolist())
