"""Dataset condensation with gradient matching (DC, Zhao, Mopuri & Bilen 2021): per class, the gradient
of the classification loss on the class's synthetic instances should point where the gradient on a
batch of its real clips points, layer by layer, under a freshly initialised network.

The distance is the paper's: for every weight tensor with an output dimension (conv and linear
weights), one minus the cosine between the real and synthetic gradients of each output unit, summed
over units, layers and classes. One-dimensional parameters (biases, norm scales) count zero, as in
the reference, so their gradients are never computed. A unit's weights are everything but the output
dimension, for MiniC3D's Conv3d weights too (the reference's distance knows only image-network shapes).

How much a sample covers: one outer loop at the network's initialisation, no inner training. That is
what the reference's ``get_loops`` uses at IPC 1 and 5 (1 outer, 1 inner: its loop ends before the
network is trained). At IPC >= 10 the reference trains the network on the synthetic set between outer
loops; raydd does not: every class's term would then depend on every class's rows (which a worker of a
``--worker-split classes`` sample does not hold up to date), and the inner epochs would multiply the CPU cost
of a sample. Matching at fresh initialisations only is DC's outer loop with a new network each time.

Because the loss is a sum of per-class terms, a class-split worker (``sample.classes``) computes
exactly its classes' terms and their gradients reach only its classes' rows (and H, which the loop
sums over workers). Memory holds one class's double-backward graph at a time: each class's term is
backpropagated to a detached copy of the drawn instances, and the drawn instances receive the sum once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raydd.distill.methods.base import MatchingSample, fresh_network
from raydd.distill.share import Share
from raydd.distill.synthetic import SyntheticSet

REAL_CHUNK = 256  # real clips per forward: bounds the activations held at once
EPS = 1e-6  # the reference's guard against a zero norm


def gradient_distance(synthetic: Sequence[Tensor], real: Sequence[Tensor]) -> Tensor:
    """Sum over layers and output units of 1 - cos(real, synthetic gradient of the unit's weights)."""
    total = synthetic[0].new_zeros(())
    for g_syn, g_real in zip(synthetic, real, strict=True):
        s, r = g_syn.reshape(len(g_syn), -1), g_real.reshape(len(g_real), -1)
        total = total + (1 - (s * r).sum(-1) / (s.norm(dim=-1) * r.norm(dim=-1) + EPS)).sum()
    return total


def matched_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The weights DC compares: every parameter with an output dimension and more (not biases, norms)."""
    return [p for p in net.parameters() if p.dim() > 1]


class GradientMatching(nn.Module):
    def __init__(
        self, build_network: Callable[[], nn.Module], *, batch_real: int, real_chunk: int = REAL_CHUNK
    ) -> None:
        super().__init__()
        if batch_real < 1:
            raise ValueError(f"batch_real must be a positive integer, got {batch_real}")
        self.build_network = build_network
        self.batch_real, self.real_chunk = batch_real, real_chunk

    def learnable(self) -> list[nn.Parameter]:
        return []

    def accumulate(self, synthetic: SyntheticSet, sample: MatchingSample, weight: float) -> Tensor:
        net = fresh_network(self.build_network, sample.seed, sample.device)
        net.train()
        params = matched_parameters(net)
        classes = sample.classes(synthetic.num_classes)
        # Every class is drawn, so that a worker's share is what one worker draws for those classes.
        drawn = sample.real.draw_per_class(self.batch_real, sample.generator)
        videos = synthetic.draw_classes(classes, sample.generator)
        leaf = videos.detach().requires_grad_(True)
        n, k = self.batch_real, synthetic.per_class
        total = torch.zeros((), dtype=torch.float64, device=sample.device)  # on the device: the loop reads it
        per_class = [drawn.part(c * n, (c + 1) * n).chunks(self.real_chunk) for c in classes]
        # one stream over the classes' chunks: the next one is gathered while this one computes
        loaded = sample.real.stream([chunk for chunks in per_class for chunk in chunks])
        for position, c in enumerate(classes):
            g_real = self.real_gradient(net, params, itertools.islice(loaded, len(per_class[position])), n, c)
            mine = leaf[position * k : (position + 1) * k]
            labels = torch.full((k,), c, dtype=torch.long, device=mine.device)
            g_syn = torch.autograd.grad(F.cross_entropy(net(mine), labels), params, create_graph=True)
            distance = gradient_distance(g_syn, g_real)
            torch.autograd.backward(distance * weight, inputs=[leaf])
            total += distance.detach()
        loaded.close()
        if videos.requires_grad and leaf.grad is not None:
            videos.backward(leaf.grad)
        return total

    def real_gradient(
        self, net: nn.Module, params: list[nn.Parameter], chunks: Iterable[Tensor], drawn: int, label: int
    ) -> list[Tensor]:
        """Gradient of the mean cross-entropy over one class's ``drawn`` clips, loaded a chunk at a time."""
        gradient = [torch.zeros_like(p) for p in params]
        for clips in chunks:
            labels = torch.full((len(clips),), label, dtype=torch.long, device=clips.device)
            loss = F.cross_entropy(net(clips), labels, reduction="sum") / drawn
            for total, part in zip(gradient, torch.autograd.grad(loss, params), strict=True):
                total += part
        return gradient

    def after_step(self, synthetic: SyntheticSet, generator: torch.Generator, share: Share | None = None) -> None:
        return None
