"""A static-dynamic set as the reference evaluation trains on it: (still, memory) pairs drawn anew on every fetch.

The set has IPC video slots per class. Slot k of class c owns stills ``c*SPC + k*s .. + s-1`` and memories
``c*DPC + k*d .. + d-1`` (s = SPC/IPC, d = DPC/IPC; the reference's 2 and 2). Each time a slot is fetched it
draws one of each, uniformly, and renders them through the stored H, so no pair is fixed across epochs.
"""

from __future__ import annotations

import torch

from raydd.classes import class_major_labels
from raydd.distilled_set import StaticDynamicParts
from raydd.errors import RayddError


class RepairedStaticDynamic:
    """A batch source (see :mod:`raydd.evaluation.sources`) over a static-dynamic set's IPC x classes slots."""

    def __init__(self, parts: StaticDynamicParts, seed: int) -> None:
        meta = parts.metadata
        ipc, spc, dpc = meta["ipc"], meta["spc"], meta["dpc"]
        if spc % ipc or dpc % ipc:
            raise RayddError(
                f"static-dynamic set with {spc} stills and {dpc} memories a class cannot be split into {ipc} "
                "video slots (--protocol reference re-pairs within slots): evaluate it with --protocol raydd"
            )
        self.parts = parts
        self.ipc, self.spc, self.dpc = ipc, spc, dpc
        self.per_slot_static, self.per_slot_dynamic = spc // ipc, dpc // ipc
        self.labels = class_major_labels(parts.num_classes, ipc)
        self.generator = torch.Generator().manual_seed(seed)
        self._on: dict[torch.device, torch.nn.Module] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def draw(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(still index, memory index) of a fresh draw for each slot."""
        label, k = slots // self.ipc, slots % self.ipc
        pick_s = torch.randint(self.per_slot_static, (len(slots),), generator=self.generator)
        pick_d = torch.randint(self.per_slot_dynamic, (len(slots),), generator=self.generator)
        static = label * self.spc + k * self.per_slot_static + pick_s
        return static, label * self.dpc + k * self.per_slot_dynamic + pick_d

    @torch.no_grad()
    def batch(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        static_index, dynamic_index = self.draw(indices)
        if device not in self._on:
            self._on[device] = self.parts.hallucinator.to(device)
        static = self.parts.static_NCHW[static_index].to(device)
        dynamic = self.parts.dynamic_NCTHW[dynamic_index].to(device)
        return self._on[device](static, dynamic), self.labels[indices].to(device)
