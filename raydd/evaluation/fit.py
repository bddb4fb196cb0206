"""The one supervised training loop of raydd: epochs of shuffled mini-batches, cross-entropy, an optimiser
step per batch; and the scoring of a trained network on a test split.

Two jobs use it and differ only through its hooks: evaluation (:mod:`raydd.evaluation.train`: the protocol's
passes, the lr cut at the start of a pass, the final test) and experts (:mod:`raydd.experts.trainer`: plain SGD,
the parameters recorded after every epoch). Each epoch draws its order from ``generator`` first, then trains
batch by batch; a non-finite loss stops the run with one line naming the epoch.

Image models (the frame-only ConvNet) see one random frame per clip while training and the middle frame
when tested (:func:`frame_picker`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from raydd.errors import RayddError
from raydd.evaluation.sources import BatchSource
from raydd.models.registry import IMAGE_MODELS


@dataclasses.dataclass(frozen=True)
class EpochStats:
    loss: float  # mean training loss over the epoch's clips
    accuracy: float  # fraction of the epoch's clips classified right (before each batch's step)


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


def fit_epochs(
    model: nn.Module,
    train: BatchSource,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    optimizer_for: Callable[[int], torch.optim.Optimizer],
    diverged: Callable[[int], str],
    on_epoch: Callable[[int, EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train ``model`` in place for ``epochs`` epochs (0-based ``epoch`` in every hook).

    ``optimizer_for(epoch)``: the optimiser of the epoch (evaluation cuts its lr or builds a fresh one there);
    ``diverged(epoch)``: the error line for a non-finite loss; ``on_epoch(epoch, stats)`` after every epoch."""
    history = []
    for epoch in range(epochs):
        optimizer = optimizer_for(epoch)
        model.train()
        order = torch.randperm(len(train), generator=generator)
        # The epoch's sums stay on the device and are read back once, after its last batch: a read per batch
        # would make a GPU wait for every step. float64, as the host summed the batches' float32 losses before.
        total = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for start in range(0, len(order), batch_size):
            videos, labels = train.batch(order[start : start + batch_size], device)
            logits = model(to_input(videos))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach().double() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
        # A non-finite batch loss makes the sum non-finite: the run stops at the end of the epoch it diverged in.
        loss_sum, correct_count = torch.stack([total, correct.double()]).tolist()
        if not math.isfinite(loss_sum):
            raise RayddError(diverged(epoch))
        total, correct = loss_sum, int(correct_count)
        history.append(EpochStats(total / len(order), correct / len(order)))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history


@torch.no_grad()
def score(
    model: nn.Module,
    test: BatchSource,
    num_classes: int,
    device: torch.device,
    to_input: Callable[[torch.Tensor, bool], torch.Tensor],
    batch_size: int = 256,
) -> tuple[float, float, int, tuple[float, ...]]:
    """(top-1, top-k, k, per-class top-1) of ``model`` on ``test``: fractions, k = min(5, classes)."""
    model.eval()
    top_k = min(5, num_classes)
    # counted on the device and read back once, after the last batch (index_add_, not bincount: bincount reads its
    # input's maximum on the host); the counts are whole numbers, exact in float32
    correct1 = torch.zeros(num_classes, device=device)
    correct_k = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(test), batch_size):
        videos, labels = test.batch(torch.arange(start, min(start + batch_size, len(test))), device)
        logits = model(to_input(videos, False))
        best = logits.topk(top_k, dim=1).indices
        correct1.index_add_(0, labels, (best[:, 0] == labels).float())
        correct_k += (best == labels[:, None]).any(1).sum()
    read = torch.cat([correct1.double(), correct_k.double().view(1)]).to("cpu")
    correct1, hits_k = read[:-1].float(), int(read[-1])
    counts = torch.bincount(test.labels, minlength=num_classes).clamp(min=1)
    return float(correct1.sum() / len(test)), hits_k / len(test), top_k, tuple((correct1 / counts).tolist())
