"""One distillation iteration, the same on one process or N data-parallel workers.

Iteration ``i`` has ``samples_per_worker x world_size`` matching samples; sample ``j`` draws everything
from a generator seeded by (seed, stage, i, j). Worker ``r`` computes samples r*m .. r*m+m-1, the
gradients of the synthetic set (and of the method's learnables) are averaged across workers, and every
worker takes the same optimiser step, so the synthetic tensors stay identical everywhere and N workers
compute exactly what one worker with N x m samples would. Resuming needs no RNG state: iteration i's
randomness is a function of i.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from raydd.distill.methods.base import MatchingSample, Method
from raydd.distill.real import RealData
from raydd.distill.synthetic import SyntheticSet
from raydd.errors import RayddError


class Collective(Protocol):
    rank: int
    world_size: int

    def average_(self, flat: Tensor) -> None: ...


class SingleProcess:
    rank, world_size = 0, 1

    def average_(self, flat: Tensor) -> None:
        return None


class TorchDistributed:
    """Averages over an initialised ``torch.distributed`` process group (gloo on CPU, NCCL on GPU)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def average_(self, flat: Tensor) -> None:
        self._dist.all_reduce(flat)
        flat /= self.world_size


def sample_seed(seed: int, stage: str, iteration: int, index: int) -> int:
    stage_id = int.from_bytes(stage.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([seed, stage_id, iteration, index]).generate_state(1, np.uint64)[0] >> 1)


@dataclasses.dataclass(frozen=True)
class LearningRate:
    """One optimiser group: what it updates, its lr, and the flag a user lowers when it diverges."""

    flag: str
    parameters: list[nn.Parameter]
    lr: float


def build_optimizer(groups: list[LearningRate], *, kind: str, momentum: float) -> torch.optim.Optimizer:
    param_groups = [{"params": g.parameters, "lr": g.lr, "name": g.flag} for g in groups if g.parameters]
    if kind == "adam":
        return torch.optim.Adam(param_groups)
    return torch.optim.SGD(param_groups, momentum=momentum)


@dataclasses.dataclass(frozen=True)
class IterationResult:
    iteration: int
    loss: float  # mean over every worker's samples
    seconds: float
    samples: int  # matching samples of this iteration, all workers


class Distiller:
    def __init__(
        self, *, stage: str, synthetic: SyntheticSet, method: Method, real: RealData, groups: list[LearningRate], optimizer: torch.optim.Optimizer,
        collective: Collective, samples_per_worker: int, seed: int, device: torch.device,
    ) -> None:  # fmt: skip
        self.stage, self.synthetic, self.method, self.real = stage, synthetic, method, real
        self.groups, self.optimizer, self.collective = groups, optimizer, collective
        self.samples_per_worker, self.seed, self.device = samples_per_worker, seed, device
        self.learnables = [p for g in groups for p in g.parameters]

    def step(self, iteration: int) -> IterationResult:
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=False)
        for p in self.learnables:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        m, rank = self.samples_per_worker, self.collective.rank
        total = 0.0
        for j in range(rank * m, rank * m + m):
            seed = sample_seed(self.seed, self.stage, iteration, j)
            sample = MatchingSample(torch.Generator().manual_seed(seed), seed, self.real, self.device)
            total += self.method.accumulate(self.synthetic, sample, 1.0 / m)
        flat = torch.cat([p.grad.reshape(-1) for p in self.learnables] + [torch.tensor([total / m], device=self.device)])
        self.collective.average_(flat)
        loss = float(flat[-1])
        if not math.isfinite(loss) or not torch.isfinite(flat).all():
            flags = ", ".join(f"{g.flag} (now {g.lr:g})" for g in self.groups if g.parameters)
            raise RayddError(f"non-finite matching loss at iteration {iteration} of stage {self.stage}: lower {flags}")
        offset = 0
        for p in self.learnables:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        self.optimizer.step()
        self.method.after_step(self.synthetic, torch.Generator().manual_seed(sample_seed(self.seed, self.stage + "/after", iteration, 0)))
        return IterationResult(iteration, loss, time.perf_counter() - started, m * self.collective.world_size)

    def state(self, iteration: int) -> dict[str, Any]:
        """Everything a resumed run needs (``iteration``: the next one to run)."""
        return {"iteration": iteration, "synthetic": self.synthetic.state_dict(), "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict()}

    def restore(self, state: dict[str, Any]) -> int:
        self.synthetic.load_state_dict(state["synthetic"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        return int(state["iteration"])
