"""Distribution matching (DM, Zhao & Bilen 2023): per class, match the mean embedding of real and
synthetic instances under a freshly initialised network, summed over classes.

Unlike the reference (a Python loop over classes with batch-of-one synthetic forwards), the real clips
go through the network in large forwards without a graph, and the synthetic instances in one forward;
per-class means are reshapes of class-major batches. With ``precision`` bf16 (``auto`` where the hardware
runs it natively) the real forwards, ~98% of the work at IPC 1, run in bfloat16 (~1.8x faster on an
AVX-512 BF16 CPU); the synthetic side and its gradient stay float32 (tests/distill/test_precision.py
bounds the difference).

The real side is bounded: the sample's clips are drawn first (row numbers only), then loaded,
standardised and embedded a block of whole classes at a time (at most ``real_chunk`` clips as floats,
or one class in ``real_chunk`` pieces when ``batch_real`` is larger), keeping only per-class mean
embeddings. Because the loss is a sum over classes, a worker of a class-split sample
(``sample.classes``) computes exactly its classes' terms, and their gradients reach only its classes'
synthetic instances.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from raydd.distill.methods.base import MatchingSample, fresh_network
from raydd.distill.methods.catalog import low_precision_of
from raydd.distill.real import RealData, RealDraw
from raydd.distill.share import Share
from raydd.distill.synthetic import SyntheticSet

REAL_CHUNK = 256  # clips per no-grad forward: bounds the activations held at once


class DistributionMatching(nn.Module):
    def __init__(
        self,
        build_network: Callable[[], nn.Module],
        *,
        batch_real: int,
        real_chunk: int = REAL_CHUNK,
        features: str = "map",
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        self.build_network = build_network
        self.batch_real, self.real_chunk = batch_real, real_chunk
        self.features = features  # "map": the flattened feature map (the reference); "pooled": pooled features
        self.precision = precision  # raydd.devices.PRECISIONS: of the real embedding (no graph, ~98% of the work)

    def _embed(self, net: nn.Module, inputs: Tensor) -> Tensor:
        feature_map = getattr(net, "feature_map", None) if self.features == "map" else None
        return feature_map(inputs) if feature_map is not None else net.embed(inputs)  # a network without one: its embed

    def learnable(self) -> list[nn.Parameter]:
        return []

    def accumulate(self, synthetic: SyntheticSet, sample: MatchingSample, weight: float) -> Tensor:
        net = fresh_network(self.build_network, sample.seed, sample.device)
        net.train()
        net.requires_grad_(False)
        classes = sample.classes(synthetic.num_classes)
        # Every class is drawn, so that a worker's share is what one worker draws for those classes.
        drawn = sample.real.draw_per_class(self.batch_real, sample.generator)
        videos = synthetic.draw_classes(classes, sample.generator)
        real_mean = self.real_means(net, sample.real, drawn, classes)
        synthetic_mean = self._embed(net, videos).view(len(classes), synthetic.per_class, -1).mean(1)
        loss: Tensor = ((real_mean - synthetic_mean) ** 2).sum()
        (loss * weight).backward()
        return loss.detach()

    def low_precision(self, device: torch.device) -> torch.dtype | None:
        """The dtype of the real embedding where it is not float32 (``precision``, on this device)."""
        return low_precision_of("dm", self.precision, device)

    @torch.no_grad()
    def real_means(self, net: nn.Module, real: RealData, drawn: RealDraw, classes: range) -> Tensor:
        """Mean embedding of each class's drawn clips (``drawn`` is class-major, ``batch_real`` a class),
        loaded and embedded a block of whole classes at a time."""
        n = self.batch_real
        per_block = max(1, self.real_chunk // n)
        dtype = self.low_precision(real.device) or torch.float32
        if dtype != torch.float32:
            # A low-precision copy rather than autocast: autocast runs the max-pools in float32, casting every
            # feature map up and back down; max and ReLU are exact in bf16, so the results are the same.
            net = copy.deepcopy(net).to(dtype)
        firsts = range(classes.start, classes.stop, per_block)
        blocks = [range(first, min(first + per_block, classes.stop)) for first in firsts]
        chunks = [drawn.part(block.start * n, block.stop * n).chunks(self.real_chunk) for block in blocks]
        # one stream over the whole sample: the next chunk is gathered while this one is embedded
        loaded = real.stream([chunk for block_chunks in chunks for chunk in block_chunks])
        means = []
        for block, block_chunks in zip(blocks, chunks, strict=True):
            parts = [self._embed(net, next(loaded).to(dtype)) for _ in block_chunks]
            embedding = torch.cat([part.float() for part in parts])  # the means in float32
            means.append(embedding.view(len(block), n, -1).mean(1))
        loaded.close()
        return torch.cat(means)

    def after_step(self, synthetic: SyntheticSet, generator: torch.Generator, share: Share | None = None) -> None:
        return None
