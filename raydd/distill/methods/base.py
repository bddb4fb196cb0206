"""The interface between the distillation loop and a matching method.

A *matching sample* is one independent draw of whatever a method compares the synthetic set against:
a freshly initialised network and real batches (DM), an expert and a start epoch (MTT), a pool model
and a real batch (FRePo). Each has its own seeded generator, so a sample is the same computation on
whichever worker draws it: that is what makes N workers exactly N x the samples of one
(``--worker-split samples``). Under ``--worker-split classes`` every worker runs the same samples, each for its own
block of ``classes``: it makes every random choice of the whole sample and keeps its share, so that the
shares add up to what one worker computes.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import torch
from torch import Tensor, nn

from raydd.devices import module_to_device
from raydd.distill.real import RealData
from raydd.distill.share import Share
from raydd.distill.synthetic import SyntheticSet


@dataclasses.dataclass(frozen=True)
class MatchingSample:
    generator: torch.Generator  # every random choice of this sample comes from here
    seed: int  # the generator's seed (for network initialisation through torch's global RNG)
    real: RealData
    device: torch.device
    share: Share | None = None  # this worker's part of a class-split sample; None: the whole sample

    def classes(self, num_classes: int) -> range:
        return range(num_classes) if self.share is None else self.share.classes


class Method(Protocol):
    """``accumulate`` computes one sample's loss and adds ``weight`` x its gradient to the ``.grad`` of
    the synthetic set's parameters (and the method's own, e.g. MTT's learnable lr); returns the loss, a 0-d
    tensor left on the device (float32, or float64 where it sums terms) for the loop's one read back of the
    iteration: a method that reads a value on the host (``.item()``, ``bool(t)``, a boolean mask, ``nonzero``)
    makes a GPU wait (tests/distill/test_host_syncs.py counts them).
    Methods that keep state between iterations (FRePo's model pool) update it in ``after_step``; under a
    class split (``share``) every worker calls it and the state must stay the same on all of them."""

    def learnable(self) -> list[nn.Parameter]: ...
    def accumulate(self, synthetic: SyntheticSet, sample: MatchingSample, weight: float) -> Tensor: ...
    def after_step(self, synthetic: SyntheticSet, generator: torch.Generator, share: Share | None = None) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> object: ...


def low_precision(method: Method, device: torch.device) -> torch.dtype | None:
    """The lower precision ``method`` computes in on ``device``, if any (DM, MTT: their ``low_precision``)."""
    return method.low_precision(device) if hasattr(method, "low_precision") else None


def fresh_network(build, seed: int, device: torch.device) -> nn.Module:  # noqa: ANN001
    """A network initialised from ``seed`` without touching the caller's global RNG state. It is built on the
    host (the same initial weights on every device) and sent with :func:`~raydd.devices.module_to_device`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build()
    return module_to_device(network, device)
