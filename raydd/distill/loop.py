"""One distillation iteration, the same on one process or N data-parallel workers.

Iteration ``i`` runs matching samples; sample ``j`` draws everything from a generator seeded by
(seed, stage, i, j), so resuming needs no RNG state: iteration i's randomness is a function of i.
Two ways to share an iteration between N workers (``--worker-split``):

* ``samples``: the iteration has ``samples_per_worker x N`` samples; worker ``r`` computes samples
  r*m .. r*m+m-1, the gradients of the synthetic set (and of the method's learnables) are averaged, and
  every worker takes the same optimiser step, so the synthetic tensors stay identical everywhere and N
  workers compute exactly what one worker with N x m samples would.
* ``classes``: the iteration has ``samples_per_worker`` samples whatever N is, and every worker runs
  each of them for its own contiguous block of classes (:func:`~raydd.distill.share.owned_classes`).
  The loss is a sum over classes, so a class's synthetic rows get their whole gradient on their owner: only the shared
  parameters (H, MTT's lr) and the loss are all-reduced (summed), and each worker's optimiser step is
  right for its own rows only (the others drift on stale momentum and are never read). The rows come
  together, optimiser state included, in :meth:`Distiller.synchronise`, an all-reduce of owner-masked
  tensors run before a checkpoint is written; a resumed worker loads the whole set. N workers then
  compute what one worker computes (to float rounding: the real clips are embedded in other batches),
  in about 1/N of the time, with per-iteration traffic independent of the synthetic set's size.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from raydd.distill.methods.base import MatchingSample, Method, low_precision
from raydd.distill.methods.catalog import ADAM
from raydd.distill.real import RealData
from raydd.distill.share import Share, all_gather_rows
from raydd.distill.synthetic import SyntheticSet
from raydd.errors import RayddError

SAMPLES, CLASSES = "samples", "classes"
SPLITS = (CLASSES, SAMPLES)


class Collective(Protocol):
    rank: int
    world_size: int

    def average_(self, flat: Tensor) -> None: ...
    def sum_(self, flat: Tensor) -> None: ...
    def gather(self, tensor: Tensor, sizes: list[int]) -> Tensor: ...


class SingleProcess:
    rank, world_size = 0, 1

    def average_(self, flat: Tensor) -> None:
        return None

    def sum_(self, flat: Tensor) -> None:
        return None

    def gather(self, tensor: Tensor, sizes: list[int]) -> Tensor:
        return tensor


class TorchDistributed:
    """Averages over an initialised ``torch.distributed`` process group (gloo on CPU, NCCL on GPU)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def average_(self, flat: Tensor) -> None:
        self._dist.all_reduce(flat)
        flat /= self.world_size

    def sum_(self, flat: Tensor) -> None:
        self._dist.all_reduce(flat)

    def gather(self, tensor: Tensor, sizes: list[int]) -> Tensor:
        return all_gather_rows(tensor, sizes, self.rank)


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
    """``kind``: the method's optimiser (:mod:`raydd.distill.methods.catalog`), Adam or SGD with ``momentum``."""
    param_groups = [{"params": g.parameters, "lr": g.lr, "name": g.flag} for g in groups if g.parameters]
    if kind == ADAM:
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
        self,
        *,
        stage: str,
        synthetic: SyntheticSet,
        method: Method,
        real: RealData,
        groups: list[LearningRate],
        optimizer: torch.optim.Optimizer,
        collective: Collective,
        samples_per_worker: int,
        seed: int,
        device: torch.device,
        split: str = SAMPLES,
    ) -> None:
        if split not in SPLITS:
            raise RayddError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        self.stage, self.synthetic, self.method, self.real = stage, synthetic, method, real
        self.groups, self.optimizer, self.collective = groups, optimizer, collective
        self.samples_per_worker, self.seed, self.device, self.split = samples_per_worker, seed, device, split
        self.learnables = [p for g in groups for p in g.parameters]
        by_classes = split == CLASSES and collective.world_size > 1
        owned = {id(p) for p in synthetic.class_parameters()} if by_classes else set()
        self.class_learnables = [p for p in self.learnables if id(p) in owned]
        self.shared_learnables = [p for p in self.learnables if id(p) not in owned]
        self.share = Share(collective, synthetic.num_classes) if by_classes else None
        self.classes = self.share.classes if self.share is not None else None

    def _precision_hint(self) -> str:
        """Under bf16 a non-finite loss may be the precision's, not the lr's: MTT's student on CPU diverged at
        random at builtin size under bf16 (oneDNN, torch 2.14.1), on inputs where fp32 stays finite."""
        low = low_precision(self.method, self.device)
        return (
            f", or run with --precision fp32 (this method computes in {str(low).removeprefix('torch.')} here)"
            if low
            else ""
        )

    def step(self, iteration: int) -> IterationResult:
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=False)
        for p in self.learnables:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        m, rank = self.samples_per_worker, self.collective.rank
        first = 0 if self.split == CLASSES else rank * m
        # The samples' losses are summed on the device in float64 (what summing the floats on the host did, to the
        # bit), and the sum, the verdict on the gradients, stays there until the one read back of the iteration below.
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for j in range(first, first + m):
            seed = sample_seed(self.seed, self.stage, iteration, j)
            sample = MatchingSample(torch.Generator().manual_seed(seed), seed, self.real, self.device, self.share)
            total = total + self.method.accumulate(self.synthetic, sample, 1.0 / m).double()
        # Own rows are checked here and the verdict is summed with the rest, so every worker raises together.
        own_bad = torch.zeros((), device=self.device)
        for p in self.class_learnables:
            own_bad = own_bad + (~torch.isfinite(p.grad)).any()
        scalars = torch.stack([(total / m).float(), own_bad.float()])
        flat = torch.cat([p.grad.reshape(-1) for p in self.shared_learnables] + [scalars])
        if self.split == CLASSES:
            self.collective.sum_(flat)
        else:
            self.collective.average_(flat)
        loss, bad = torch.stack([flat[-2], (~torch.isfinite(flat)).any() + flat[-1]]).tolist()
        if not math.isfinite(loss) or bad > 0:
            flags = ", ".join(f"{g.flag} (now {g.lr:g})" for g in self.groups if g.parameters)
            raise RayddError(
                f"non-finite matching loss at iteration {iteration} of stage {self.stage}: lower {flags}"
                + self._precision_hint()
            )
        offset = 0
        for p in self.shared_learnables:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        self.optimizer.step()
        self.synthetic.project_()
        after = torch.Generator().manual_seed(sample_seed(self.seed, self.stage + "/after", iteration, 0))
        self.method.after_step(self.synthetic, after, self.share)
        samples = m if self.split == CLASSES else m * self.collective.world_size
        return IterationResult(iteration, loss, time.perf_counter() - started, samples)

    def synchronise(self) -> None:
        """Under a class split, give every worker every class's rows (and their optimiser state) from
        their owners; call it on every worker before one of them writes :meth:`state`."""
        if self.classes is None:
            return
        tensors = []
        for p in self.class_learnables:
            state = self.optimizer.state.get(p, {})
            tensors += [p.data] + [v for _, v in sorted(state.items()) if isinstance(v, Tensor) and v.shape == p.shape]
        masked = []
        for tensor in tensors:
            rows = tensor.shape[0] // self.synthetic.num_classes
            mine = slice(self.classes.start * rows, self.classes.stop * rows)
            own = torch.zeros_like(tensor)
            own[mine] = tensor[mine]
            masked.append(own.reshape(-1))
        flat = torch.cat(masked)
        self.collective.sum_(flat)
        offset = 0
        for tensor in tensors:
            tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()

    def state(self, iteration: int) -> dict[str, Any]:
        """Everything a resumed run needs (``iteration``: the next one to run)."""
        return {
            "iteration": iteration,
            "synthetic": self.synthetic.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> int:
        self.synthetic.load_state_dict(state["synthetic"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        return int(state["iteration"])
