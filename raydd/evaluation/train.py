"""Train one fresh network on a batch source and score it on the test split, final epoch only.

There is no model selection on the test set (the reference's distillation scripts keep the best
evaluation over iterations; raydd reports the last epoch of one evaluation). The protocol
(:mod:`raydd.evaluation.protocols`) decides the passes, the lr cut, the batch re-standardisation and
MiniC3D's head. The epoch loop and the scoring are :mod:`raydd.evaluation.fit`'s, shared with experts.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch

from raydd.devices import module_to_device
from raydd.evaluation.fit import fit_epochs, frame_picker, score
from raydd.evaluation.protocols import PROTOCOL, InputStatistics, Protocol
from raydd.evaluation.sources import BatchSource
from raydd.models.registry import build_model


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
    protocol: Protocol = PROTOCOL,
) -> RunResult:
    """SGD (momentum, weight decay), lr x0.1 once (where the protocol says); returns final-epoch test accuracy."""
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    head = {"head": protocol.head} if settings.model == "minic3d" else {}
    model = build_model(settings.model, num_classes=num_classes, clip_shape=clip_shape, **head)
    model = module_to_device(model, device)

    def sgd(lr: float) -> torch.optim.Optimizer:
        momentum, weight_decay = settings.momentum, settings.weight_decay
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    optimizer = sgd(settings.lr)
    picker = frame_picker(settings.model)

    seen = InputStatistics()  # what the test clips are standardised with (protocol.test_statistics "train")

    def to_input(videos: torch.Tensor, training: bool) -> torch.Tensor:
        inputs = picker(videos, training)
        if not training:
            return protocol.prepare_test(inputs, seen)
        seen.add(inputs)
        return protocol.prepare(inputs)

    def optimizer_for(epoch: int) -> torch.optim.Optimizer:
        nonlocal optimizer
        if epoch == cut:  # lr x0.1 from this pass on: a fresh SGD (momentum restarts) where the protocol says
            if protocol.fresh_optimizer_at_cut:
                optimizer = sgd(settings.lr * 0.1)
            else:
                for group in optimizer.param_groups:
                    group["lr"] = settings.lr * 0.1
        return optimizer

    cut = protocol.cut_at(settings.epochs)
    history = fit_epochs(
        model,
        train,
        epochs=protocol.passes(settings.epochs),
        batch_size=settings.batch_size,
        generator=generator,
        device=device,
        to_input=lambda videos: to_input(videos, True),
        optimizer_for=optimizer_for,
        diverged=lambda epoch: (
            f"non-finite training loss at epoch {epoch + 1} of run {run} (lr {settings.lr:g}): lower --lr"
        ),
        on_epoch=None if on_epoch is None else lambda epoch, stats: on_epoch(epoch, stats.loss),
    )
    losses = [stats.loss for stats in history]
    top1, top5, top_k, per_class = score(model, test, num_classes, device, to_input, protocol.test_batch_size)
    return RunResult(run, top1, top5, top_k, per_class, tuple(losses), len(train), time.perf_counter() - started)
