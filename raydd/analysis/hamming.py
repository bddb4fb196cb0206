"""Suppl. 9.1's motion score: the inter-frame Hamming distance of frozen 2D-conv features.

A four-layer image ConvNet is trained on single frames of the training clips (raydd's stand-in for the
paper's pre-trained network, whose weights it does not name), then frozen. Each frame's feature map is
hashed to bits, one per feature: set where the feature is above that frame's median (an
average-hash, so every code has about half its bits set whatever the frame's brightness). A clip's
score is the fraction of bits that flip between consecutive frames, averaged over its frame pairs; a
class's score is the mean over its clips. Little motion flips few bits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raydd.errors import RayddError
from raydd.evaluation.fit import frame_picker
from raydd.evaluation.sources import BatchSource
from raydd.models.registry import build_model

FEATURE_DEPTH = 4  # "a pre-trained four-layer 2D convolutional network" (Suppl. 9.1)


def train_feature_net(
    train: BatchSource,
    *,
    num_classes: int,
    clip_shape: tuple[int, int, int, int],
    epochs: int,
    width: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    lr: float = 1e-2,
) -> nn.Module:
    """The frozen frame network: ``epochs`` of SGD on one random frame per clip (0: left at random)."""
    torch.manual_seed(seed)
    net = build_model(
        "convnet", num_classes=num_classes, clip_shape=clip_shape, depth=FEATURE_DEPTH, net_width=width
    ).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    pick, generator = frame_picker("convnet"), torch.Generator().manual_seed(seed)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(order), batch_size):
            videos, labels = train.batch(order[start : start + batch_size], device)
            loss = F.cross_entropy(net(pick(videos, True)), labels)
            if not math.isfinite(loss.item()):
                raise RayddError(
                    f"non-finite loss training the feature network at epoch {epoch + 1}: lower --feature-epochs"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net.eval().requires_grad_(False)


@torch.no_grad()
def clip_scores(net: nn.Module, videos_NCTHW: Tensor) -> Tensor:
    """(N,) mean fraction of feature bits that flip between consecutive frames of each clip."""
    n, c, t, h, w = videos_NCTHW.shape
    if t < 2:
        raise RayddError(
            "the Hamming-distance score needs clips of at least 2 frames: prepare the dataset with --frames 2 or more"
        )
    features = net.embed(videos_NCTHW.transpose(1, 2).reshape(n * t, c, h, w)).view(n, t, -1)
    bits = features > features.median(dim=2, keepdim=True).values
    return (bits[:, 1:] != bits[:, :-1]).float().mean(dim=(1, 2))


@torch.no_grad()
def class_scores(
    net: nn.Module, clips: BatchSource, num_classes: int, device: torch.device, *, batch: int = 64
) -> tuple[float, ...]:
    """Each class's mean clip score over ``clips``."""
    total, count = torch.zeros(num_classes), torch.zeros(num_classes)
    for start in range(0, len(clips), batch):
        videos, labels = clips.batch(torch.arange(start, min(start + batch, len(clips))), device)
        total += torch.bincount(labels.cpu(), weights=clip_scores(net, videos).cpu(), minlength=num_classes)
        count += torch.bincount(labels.cpu(), minlength=num_classes)
    return tuple((total / count.clamp(min=1)).tolist())
