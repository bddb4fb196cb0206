"""Matching training trajectories (MTT, Cazenavette et al. 2022).

Each sample picks a random expert and a start epoch t < ``max_start_epoch``, trains a student from
the expert's parameters at t for ``syn_steps`` SGD steps on synthetic batches with a (learnable) lr,
and scores ||theta_student - theta_{t+E}||^2 / ||theta_t - theta_{t+E}||^2.

Two ways to differentiate through the unrolled student, with the same gradient:

* ``plain``: one autograd graph over all steps (memory grows with ``syn_steps`` x activations);
* ``memory_bounded``: the forward pass keeps only the parameter vector of every step; the backward
  pass walks the steps in reverse, rebuilding one step's graph at a time (the same synthetic batch,
  the same random static/dynamic pairing, from a stored per-step seed) and pushing the gradient
  through it. Memory is one step's graph plus ``syn_steps`` parameter vectors, for one extra forward.

On CPU the student's float32 convolutions run in channels-last-3d layout (oneDNN's native one: the same
values, ~7% less time; not under bf16, where oneDNN's backward in that layout returned NaN on small shapes,
torch 2.14.1). ``precision="bf16"`` runs the student's steps under bfloat16 autocast, forward, backward and
the backward through them; the parameters, their updates and the matching loss stay float32. On the CPU the
convolutions whose input is smaller than their kernel run in float32 even then
(:mod:`~raydd.distill.methods.float32_convs`: oneDNN's bf16 weight gradient is wrong there, and the student
diverged at builtin size). The synthetic set's gradient then stays finite and near float32's (cosine 0.994 at
builtin 8x32x32, 0.965 at 8x64x64; MiniC3D width 128, 10 steps of 10 clips, seeded-drift experts), but no run shows
the sets it makes are as accurate as float32's over 5 runs, so ``auto`` keeps MTT in float32: only an explicit
``bf16`` turns it on.

Under ``--worker-split classes`` (``sample.share``) every worker follows the same student trajectory and
computes each step's gradient on the instances of its own classes in the step's batch; the parts are
summed by an all-reduce whose backward is an all-reduce too (:func:`~raydd.distill.share.sum_over_group`).
Each worker back-propagates 1/N of the (replicated) loss, so that the gradients reaching the student's
start, the shared lr and, whole, each owner's instances, add up over workers to one worker's.

:class:`ExpertBank` holds the expert trajectories MTT matches against, opened once per worker and read one epoch
at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from raydd.data.cache import local_shard
from raydd.devices import module_to_device, to_device
from raydd.distill.methods.base import MatchingSample
from raydd.distill.methods.catalog import low_precision_of
from raydd.distill.methods.float32_convs import float32_small_convolutions
from raydd.distill.share import Share, sum_over_group
from raydd.distill.synthetic import SyntheticSet
from raydd.errors import RayddError
from raydd.experts.trajectories import (
    EXPERTS_KIND,
    ModelSpec,
    Trajectory,
    listed_records,
    shard_name,
    unflatten_parameters,
)
from raydd.storage import open_manifest, resolve

MIN_SYN_LR = 1e-3  # the reference clips the learned lr here after every update


@dataclasses.dataclass(frozen=True)
class StudentStep:
    indices: Tensor  # synthetic instances of this step's batch, on the device
    draw_seed: int  # seeds the random choices of drawing them (static/dynamic pairing)
    keep: Tensor | None = None  # under a class split: positions in ``indices`` of this worker's instances


class TrajectoryMatching(nn.Module):
    def __init__(
        self,
        bank: ExpertBank,
        *,
        syn_steps: int,
        batch_syn: int | None,
        expert_epochs: int,
        max_start_epoch: int,
        lr_teacher: float,
        learn_lr: bool,
        memory_bounded: bool,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        bank.require_epochs(max_start_epoch + expert_epochs)
        self.bank = bank
        self.syn_steps, self.batch_syn = syn_steps, batch_syn
        self.expert_epochs, self.max_start_epoch = expert_epochs, max_start_epoch
        self.learn_lr, self.memory_bounded = learn_lr, memory_bounded
        self.precision = precision  # raydd.devices.PRECISIONS; bf16 only when asked (see the module's docstring)
        self.syn_lr = nn.Parameter(torch.tensor(float(lr_teacher)), requires_grad=learn_lr)
        self._student = (bank.spec.build().requires_grad_(False),)  # a tuple: not a submodule, not checkpointed

    def learnable(self) -> list[nn.Parameter]:
        return [self.syn_lr] if self.learn_lr else []

    def _plan(
        self, synthetic: SyntheticSet, generator: torch.Generator, device: torch.device, share: Share | None
    ) -> list[StudentStep]:
        """The reference's batching: a random permutation of the synthetic set, cut into ``batch_syn``
        chunks, refilled when used up. Drawn on the host and sent in one copy; a class split's own positions are
        found there too, so that no step indexes with a mask on the device (a host read of its true count)."""
        batch = min(self.batch_syn or len(synthetic), len(synthetic))
        chosen: list[Tensor] = []
        seeds: list[int] = []
        chunks: list[Tensor] = []
        for _ in range(self.syn_steps):
            if not chunks:
                chunks = list(torch.randperm(len(synthetic), generator=generator).split(batch))
            chosen.append(chunks.pop(0))
            seeds.append(int(torch.randint(2**62, (1,), generator=generator)))
        keeps = [None if share is None else share.owns(c, synthetic.per_class).nonzero().flatten() for c in chosen]
        sizes = [len(c) for c in chosen] + [len(k) for k in keeps if k is not None]
        sent = to_device(torch.cat(chosen + [k for k in keeps if k is not None]), device).split(sizes)
        on_device = iter(sent[len(chosen) :])
        return [
            StudentStep(indices, seed, None if keep is None else next(on_device))
            for indices, seed, keep in zip(sent[: len(chosen)], seeds, keeps, strict=True)
        ]

    def _draw(self, synthetic: SyntheticSet, step: StudentStep) -> tuple[Tensor, Tensor]:
        """The step's instances and labels (under a class split: this worker's part of them)."""
        labels = synthetic.labels[step.indices]
        inputs = synthetic.draw(step.indices, torch.Generator().manual_seed(step.draw_seed), step.keep)
        return inputs, labels if step.keep is None else labels[step.keep]

    def _step(
        self, theta_P: Tensor, batch: tuple[Tensor, Tensor], size: int, share: Share | None, *, create_graph: bool
    ) -> Tensor:
        inputs, labels = batch
        parameters = unflatten_parameters(theta_P, self.bank.spec)
        if inputs.device.type == "cpu" and self.low_precision(inputs.device) is None:
            inputs, parameters = _channels_last(inputs), {name: _channels_last(p) for name, p in parameters.items()}
        with self._autocast(inputs.device):
            logits = functional_call(self._student[0], parameters, (inputs,)).float()
        if share is None:
            grad_P = torch.autograd.grad(F.cross_entropy(logits, labels), theta_P, create_graph=create_graph)[0]
        else:  # this worker's part of the batch's mean cross-entropy; the parts summed over the workers
            part = F.cross_entropy(logits, labels, reduction="sum") / size
            (grad_P,) = torch.autograd.grad(part, theta_P, create_graph=create_graph, allow_unused=True)
            grad_P = torch.zeros_like(theta_P) if grad_P is None else grad_P
            if create_graph and not grad_P.requires_grad:  # none of the batch is ours: still join the backward's sum
                grad_P = grad_P + 0 * theta_P
            grad_P = sum_over_group(grad_P, share.group)
        return theta_P - self.syn_lr * grad_P

    def low_precision(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype of the student's steps: bf16 only for an explicit ``bf16`` (lower_precisions)."""
        return low_precision_of("mtt", self.precision, device)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[object]:
        dtype = self.low_precision(device)
        if dtype is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(device.type, dtype=dtype))
        if device.type == "cpu":  # oneDNN's bf16 weight gradient is wrong where the input is smaller than the kernel
            stack.enter_context(float32_small_convolutions())
        return stack

    @staticmethod
    def _distance(theta_P: Tensor, start_P: Tensor, target_P: Tensor) -> Tensor:
        return ((theta_P - target_P) ** 2).sum() / ((start_P - target_P) ** 2).sum()

    def accumulate(self, synthetic: SyntheticSet, sample: MatchingSample, weight: float) -> Tensor:
        generator, device = sample.generator, sample.device
        if next(self._student[0].parameters()).device != device:  # moved once: .to() of each sample would copy
            module_to_device(self._student[0], device)
        expert = int(torch.randint(self.bank.num_experts, (1,), generator=generator))  # host draws: no device read
        start = int(torch.randint(self.max_start_epoch, (1,), generator=generator))
        start_P = to_device(self.bank.epoch(expert, start), device)
        target_P = to_device(self.bank.epoch(expert, start + self.expert_epochs), device)
        share = sample.share
        steps = self._plan(synthetic, generator, device, share)
        weight = weight if share is None else weight / share.group.world_size  # each worker: 1/N of the replicated loss
        if self.memory_bounded:
            loss = self._bounded(synthetic, steps, start_P, target_P, weight, share)
        else:
            theta_P = start_P.clone().requires_grad_(True)
            for step in steps:
                theta_P = self._step(theta_P, self._draw(synthetic, step), len(step.indices), share, create_graph=True)
            distance = self._distance(theta_P, start_P, target_P)
            (distance * weight).backward()
            loss = distance.detach()
        # float64, as the loop sums the samples' losses: the 1/N share is then the one the host used to compute
        return loss if share is None else loss.double() / share.group.world_size

    def _bounded(
        self,
        synthetic: SyntheticSet,
        steps: list[StudentStep],
        start_P: Tensor,
        target_P: Tensor,
        weight: float,
        share: Share | None,
    ) -> Tensor:
        thetas = [start_P]
        for step in steps:
            with torch.no_grad():
                batch = self._draw(synthetic, step)
            theta_P = thetas[-1].detach().requires_grad_(True)
            thetas.append(self._step(theta_P, batch, len(step.indices), share, create_graph=False).detach())
        final_P = thetas[-1].requires_grad_(True)
        loss = self._distance(final_P, start_P, target_P)
        (grad_P,) = torch.autograd.grad(loss * weight, final_P)
        for step, theta_P in zip(reversed(steps), reversed(thetas[:-1])):
            theta_P = theta_P.detach().requires_grad_(True)
            after_P = self._step(theta_P, self._draw(synthetic, step), len(step.indices), share, create_graph=True)
            after_P.backward(grad_P)
            grad_P = theta_P.grad
        return loss.detach()

    def after_step(self, synthetic: SyntheticSet, generator: torch.Generator, share: Share | None = None) -> None:
        if self.learn_lr:
            with torch.no_grad():
                self.syn_lr.clamp_(min=MIN_SYN_LR)


def _channels_last(tensor: Tensor) -> Tensor:
    return tensor.contiguous(memory_format=torch.channels_last_3d) if tensor.dim() == 5 else tensor


class ExpertBank:
    def __init__(self, folder_uri: str, *, make_them: str) -> None:
        """``make_them``: the command that trains these experts (named when they are missing)."""
        self.folder = resolve(folder_uri)
        records = listed_records(
            open_manifest(self.folder, EXPERTS_KIND, what="expert trajectories", make_it=make_them)
        )
        if not records:
            raise RayddError(f"{self.folder} lists no finished expert: train them with `{make_them}`")
        self.experts = sorted(records)
        self._records = records
        self._open: dict[int, Trajectory] = {}
        self.spec: ModelSpec = self._trajectory(0).spec
        self.num_epochs = min(self._trajectory(i).num_epochs for i in range(len(self.experts)))

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def _trajectory(self, position: int) -> Trajectory:
        """A remote shard goes through the node's cache, as video shards do: fetched once per node (checked
        against the manifest's size and SHA-256 when filled), then every sample's epochs are read from the
        memory-mapped local copy instead of ranged reads of the store."""
        if position not in self._open:
            expert = self.experts[position]
            location = self.folder.child(shard_name(expert))
            if not location.is_local:
                location = resolve(local_shard(location, self._records[expert].shard))
            self._open[position] = Trajectory(location)
        return self._open[position]

    def require_epochs(self, needed: int) -> None:
        if self.num_epochs < needed:
            raise RayddError(
                f"experts at {self.folder} have {self.num_epochs} epochs but max_start_epoch + expert_epochs needs "
                f"{needed}: "
                f"retrain them with --epochs {needed} or lower --max-start-epoch"
            )

    def check_fits(self, num_classes: int, clip_shape: tuple[int, ...]) -> None:
        if self.spec.num_classes != num_classes or tuple(self.spec.clip_shape) != tuple(clip_shape):
            raise RayddError(
                f"experts at {self.folder} were trained for {self.spec.num_classes} classes of shape "
                f"{tuple(self.spec.clip_shape)}, "
                f"not {num_classes} of {tuple(clip_shape)}: retrain them on this dataset with `python -m raydd.experts`"
            )

    def epoch(self, position: int, t: int) -> torch.Tensor:
        return self._trajectory(position).epoch(t)

    def close(self) -> None:
        for trajectory in self._open.values():
            trajectory.close()
        self._open.clear()
