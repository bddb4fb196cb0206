"""Distribution matching (DM, Zhao & Bilen 2023): per class, match the mean embedding of real and
synthetic instances under a freshly initialised network, summed over classes.

Unlike the reference (a Python loop over classes with batch-of-one synthetic forwards), every real
clip of the sample goes through the network in a few large forwards without a graph, and the whole
synthetic set in one forward; per-class means are reshapes of class-major batches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from raydd.distill.methods.base import MatchingSample, fresh_network
from raydd.distill.synthetic import SyntheticSet

REAL_CHUNK = 256  # clips per no-grad forward: bounds the activations held at once


class DistributionMatching(nn.Module):
    def __init__(self, build_network: Callable[[], nn.Module], *, batch_real: int) -> None:
        super().__init__()
        self.build_network = build_network
        self.batch_real = batch_real

    def learnable(self) -> list[nn.Parameter]:
        return []

    def accumulate(self, synthetic: SyntheticSet, sample: MatchingSample, weight: float) -> float:
        net = fresh_network(self.build_network, sample.seed, sample.device)
        net.train()
        net.requires_grad_(False)
        classes = synthetic.num_classes
        real = sample.real.per_class(self.batch_real, sample.generator)
        with torch.no_grad():
            real_embedding = torch.cat([net.embed(chunk) for chunk in real.split(REAL_CHUNK)])
        real_mean = real_embedding.view(classes, self.batch_real, -1).mean(1)
        instances = torch.arange(len(synthetic), device=sample.device)
        synthetic_embedding = net.embed(synthetic.draw(instances, sample.generator))
        synthetic_mean = synthetic_embedding.view(classes, synthetic.per_class, -1).mean(1)
        loss: Tensor = ((real_mean - synthetic_mean) ** 2).sum()
        (loss * weight).backward()
        return loss.item()

    def after_step(self, synthetic: SyntheticSet, generator: torch.Generator) -> None:
        return None
