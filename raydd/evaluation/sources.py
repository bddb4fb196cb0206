"""Training and test sets as batch sources in model-input space (float, standardised, (N, C, T, H, W)).

Real clips stay uint8 until a batch is on the device; distilled sets already live in model-input space.

:class:`RepairedStaticDynamic` is a static-dynamic set as the reference evaluation trains on it: (still, memory)
pairs drawn anew on every fetch. The set has IPC video slots per class. Slot k of class c owns stills
``c*SPC + k*s .. + s-1`` and memories ``c*DPC + k*d .. + d-1`` (s = SPC/IPC, d = DPC/IPC; the reference's 2 and
2). Each time a slot is fetched it draws one of each, uniformly, and renders them through the stored H, so no pair
is fixed across epochs.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from raydd.classes import class_major_labels
from raydd.data.reader import PreparedVideos, Standardiser
from raydd.data.staging import StagedGather
from raydd.devices import module_to_device, to_device
from raydd.distilled_set import StaticDynamicParts


class BatchSource(Protocol):
    labels: torch.Tensor

    def __len__(self) -> int: ...
    def batch(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]: ...


class RealClips:
    """Clips of a prepared split (all, or the subset ``indices``), standardised with ``mean``/``std``.

    A batch comes to the device as distillation's real clips do (:class:`~raydd.data.staging.StagedGather`):
    gathered into a staging buffer, pinned on CUDA, the two buffers taken in turn, so that the copy of one batch
    may still run while the next is gathered; the host never waits for its copy."""

    def __init__(
        self, videos: PreparedVideos, mean: tuple[float, ...], std: tuple[float, ...], indices: np.ndarray | None = None
    ) -> None:
        self.videos = videos
        self.indices = np.arange(len(videos)) if indices is None else np.asarray(indices)
        self.labels = videos.labels[torch.from_numpy(self.indices)]
        self._standardise = Standardiser(mean, std)
        self._gathers: dict[torch.device, StagedGather] = {}
        self._buffer = 0

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._gathers:
            self._gathers[device] = StagedGather(self.videos, device)
        gather, buffer = self._gathers[device], self._buffer
        self._buffer = 1 - buffer
        frames_NTHWC = gather.send(gather.stage(self.indices[indices.numpy()], buffer), buffer)
        return self._standardise(frames_NTHWC, device), to_device(self.labels[indices], device)


class TensorClips:
    """A distilled set: videos already in model-input space."""

    def __init__(self, videos_NCTHW: torch.Tensor, labels: torch.Tensor) -> None:
        self.videos = videos_NCTHW
        self.labels = labels
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Copied to ``device`` once, on the first batch, and gathered there on every later one."""
        if device not in self._on:
            self._on[device] = (to_device(self.videos, device), to_device(self.labels, device))
        videos, labels = self._on[device]
        indices = to_device(indices, videos.device)
        return videos[indices], labels[indices]


class RepairedStaticDynamic:
    """A batch source (see :mod:`raydd.evaluation.sources`) over a static-dynamic set's IPC x classes slots."""

    def __init__(self, parts: StaticDynamicParts, seed: int) -> None:
        meta = parts.metadata
        ipc, spc, dpc = meta["ipc"], meta["spc"], meta["dpc"]
        self.parts = parts
        self.ipc, self.spc, self.dpc = ipc, spc, dpc
        # Slot k draws from its own share of the class's stills and memories; where they do not split evenly into
        # IPC slots (say 3 stills at IPC 2), every slot draws from all of its class's.
        self.sliced = not (spc % ipc or dpc % ipc)
        self.per_slot_static, self.per_slot_dynamic = (spc // ipc, dpc // ipc) if self.sliced else (spc, dpc)
        self.labels = class_major_labels(parts.num_classes, ipc)
        self.generator = torch.Generator().manual_seed(seed)
        self._on: dict[torch.device, tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def draw(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(still index, memory index) of a fresh draw for each slot."""
        label, k = slots // self.ipc, slots % self.ipc
        pick_s = torch.randint(self.per_slot_static, (len(slots),), generator=self.generator)
        pick_d = torch.randint(self.per_slot_dynamic, (len(slots),), generator=self.generator)
        if not self.sliced:
            k = torch.zeros_like(k)
        static = label * self.spc + k * self.per_slot_static + pick_s
        return static, label * self.dpc + k * self.per_slot_dynamic + pick_d

    @torch.no_grad()
    def batch(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        static_index, dynamic_index = self.draw(indices)
        if device not in self._on:  # the set's parts go to the device once; the draws stay on the CPU's generator
            parts = self.parts
            self._on[device] = (
                module_to_device(parts.hallucinator, device),
                to_device(parts.static_NCHW, device),
                to_device(parts.dynamic_NCTHW, device),
            )
        hallucinator, static_NCHW, dynamic_NCTHW = self._on[device]
        static_index, dynamic_index = to_device(torch.stack([static_index, dynamic_index]), device)
        return hallucinator(static_NCHW[static_index], dynamic_NCTHW[dynamic_index]), to_device(
            self.labels[indices], device
        )
