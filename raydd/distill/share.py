"""A worker's share of a class-split matching sample (``--worker-split classes``).

Worker ``r`` of ``N`` owns a contiguous block of classes. It makes every random choice of the sample, as
one worker would, and computes only its classes' part; what couples the classes goes through the group:
sums of shared gradients (:meth:`Group.sum_`) and, for FRePo's kernel regression, a differentiable
gather of every worker's synthetic features (:meth:`Group.gather`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch
from torch import Tensor


class Group(Protocol):
    rank: int
    world_size: int

    def sum_(self, flat: Tensor) -> None: ...
    def gather(self, tensor: Tensor, sizes: list[int]) -> Tensor: ...


def owned_classes(num_classes: int, rank: int, world_size: int) -> range:
    """Worker ``rank``'s contiguous block of classes (block sizes differ by at most one)."""
    return range(rank * num_classes // world_size, (rank + 1) * num_classes // world_size)


@dataclasses.dataclass(frozen=True)
class Share:
    group: Group
    num_classes: int

    @property
    def classes(self) -> range:
        return owned_classes(self.num_classes, self.group.rank, self.group.world_size)

    def gather_classes(self, tensor: Tensor, per_class: int) -> Tensor:
        """Every worker's class-major ``tensor`` (``per_class`` rows a class) in class order; differentiable:
        each owner receives the gradient that every worker's use of its rows sends back."""
        world = self.group.world_size
        sizes = [len(owned_classes(self.num_classes, r, world)) * per_class for r in range(world)]
        return self.group.gather(tensor, sizes)

    def owns(self, instances: Tensor, per_class: int) -> Tensor:
        """Mask: which of ``instances`` (class-major instance numbers) belong to this worker's classes."""
        classes = instances // per_class
        return (classes >= self.classes.start) & (classes < self.classes.stop)

    def part(self, n: int) -> range:
        """This worker's contiguous part of ``n`` items (a real batch)."""
        return range(self.group.rank * n // self.group.world_size, (self.group.rank + 1) * n // self.group.world_size)


class _Sum(torch.autograd.Function):
    """all_reduce (sum) forward and backward: the gradient of a replicated value that each worker holds a
    part of (MTT's student gradient) reaches every part whole."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Group) -> Tensor:  # noqa: ANN401
        ctx.group = group
        total = tensor.clone()
        group.sum_(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN401
        grad = grad.clone()
        ctx.group.sum_(grad)
        return grad, None


def sum_over_group(tensor: Tensor, group: Group) -> Tensor:
    return _Sum.apply(tensor, group)


class _Gather(torch.autograd.Function):
    """all_gather forward (blocks padded to one size), all_reduce of the gradient backward: works on
    every backend (gloo has no reduce-scatter), and the gathered features are small."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, sizes: list[int], rank: int, dist: Any) -> Tensor:  # noqa: ANN401
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[: len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        ctx.sizes, ctx.rank, ctx.dist = sizes, rank, dist
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:  # noqa: ANN401
        grad = grad.contiguous().clone()
        ctx.dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None


def all_gather_rows(tensor: Tensor, sizes: list[int], rank: int) -> Tensor:
    """Concatenate every rank's ``tensor`` (``sizes[r]`` rows on rank ``r``) over ``torch.distributed``."""
    import torch.distributed as dist

    return _Gather.apply(tensor, sizes, rank, dist)
