"""Synthetic sets: what distillation learns. Two paradigms behind one interface.

* :class:`FreeTensors` -- naive distillation: every instance is a free learnable tensor (a full video
  (C, T, H, W), or a still image (C, H, W) in stage 1 of static-dynamic distillation).
* :class:`StaticDynamic` -- stage 2: frozen static images (SPC per class) and learnable dynamic
  memories (DPC per class, few channels / frames / pixels) turned into videos by the hallucinator H.
  Static and dynamic memories of a class are paired at random every time instances are drawn
  (the reference does the same; Suppl. 9.2 explains why SPC:DPC stays 1:1).

Every tensor lives in model-input space (standardised with the real data's mean/std). Instances are
ordered class-major: instance ``i`` belongs to class ``i // per_class``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from raydd.classes import class_major_labels
from raydd.devices import to_device
from raydd.distilled_set import render_pairs
from raydd.models.hallucinator import Hallucinator


class SyntheticSet(nn.Module):
    """The interface every method sees: ``draw`` instances (with fresh random choices), ``render`` the
    set deterministically (what the artifact and the evaluation train on), count the stored values."""

    num_classes: int
    per_class: int
    labels: Tensor

    def draw(self, indices: Tensor, generator: torch.Generator, keep: Tensor | None = None) -> Tensor:
        """Instances ``indices`` with fresh random choices; ``keep`` (positions in ``indices``, ascending, on their
        device; not a mask, whose true count a GPU would read back): only those are made, with the random choices
        drawn for all (a worker's part of a class-split batch)."""
        raise NotImplementedError

    def draw_classes(self, classes: range, generator: torch.Generator) -> Tensor:
        """The instances of ``classes`` with the random choices that drawing the whole set makes for them
        (what a worker of a class-split sample draws: its share of the one-worker draw)."""
        rows = torch.arange(classes.start * self.per_class, classes.stop * self.per_class, device=self.labels.device)
        return self.draw(torch.arange(len(self), device=self.labels.device), generator)[rows]

    def class_parameters(self) -> list[nn.Parameter]:
        """Learnable tensors whose rows are class-major (row ``i`` belongs to class ``i // (rows / num_classes)``):
        under a class split each worker updates only its own classes' rows of these."""
        return []

    def render(self) -> Tensor:
        raise NotImplementedError

    def project_(self) -> None:
        """Bring the learnable tensors back into their allowed set after an optimiser step (a no-op
        unless a bound was set)."""
        return None

    def stored_values(self) -> int:
        """Numbers that must be stored to reproduce the set (the storage accounting of DESIGN 1.3)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_classes * self.per_class


class FreeTensors(SyntheticSet):
    """``per_class`` free tensors of ``item_shape`` per class: (C, T, H, W) videos or (C, H, W) images."""

    def __init__(
        self, num_classes: int, per_class: int, item_shape: tuple[int, ...], *, initial: Tensor | None = None
    ) -> None:
        super().__init__()
        self.num_classes, self.per_class = num_classes, per_class
        shape = (num_classes * per_class, *item_shape)
        if initial is not None and tuple(initial.shape) != shape:
            raise ValueError(f"initial synthetic tensors have shape {tuple(initial.shape)}, expected {shape}")
        self.values = nn.Parameter(initial.clone().float() if initial is not None else torch.randn(shape))
        self.register_buffer("labels", class_major_labels(num_classes, per_class), persistent=False)
        self.bounds: tuple[Tensor, Tensor] | None = None

    def bound_to(self, low_C: Tensor, high_C: Tensor) -> FreeTensors:
        """Keep every value of channel c in [low_C[c], high_C[c]] (clamped after each step): the pixel
        range [0, 1] of real frames in model-input space, so that images stay images."""
        view = (1, -1) + (1,) * (self.values.dim() - 2)
        self.bounds = (low_C.reshape(view).to(self.values), high_C.reshape(view).to(self.values))
        self.project_()
        return self

    @torch.no_grad()
    def project_(self) -> None:
        if self.bounds is not None:
            low, high = (bound.to(self.values.device) for bound in self.bounds)
            self.values.copy_(torch.maximum(torch.minimum(self.values, high), low))

    def draw(self, indices: Tensor, generator: torch.Generator, keep: Tensor | None = None) -> Tensor:
        return self.values[indices if keep is None else indices[keep]]

    def draw_classes(self, classes: range, generator: torch.Generator) -> Tensor:
        return self.values[classes.start * self.per_class : classes.stop * self.per_class]

    def class_parameters(self) -> list[nn.Parameter]:
        return [self.values]

    def render(self) -> Tensor:
        return self.values.detach()

    def stored_values(self) -> int:
        return self.values.numel()


class StaticDynamic(SyntheticSet):
    """Frozen static images + learnable dynamic memories + H.

    ``per_class`` (the videos per class that a draw of the whole set and ``render`` give) is
    max(SPC, DPC); :func:`~raydd.distilled_set.render_pairs` says which pairs ``render`` shows.
    """

    def __init__(
        self,
        static_NCHW: Tensor,
        *,
        num_classes: int,
        dpc: int,
        dynamic_shape: tuple[int, int, int, int],
        hallucinator: Hallucinator,
        initial_dynamic: Tensor | None = None,
    ) -> None:
        super().__init__()
        if static_NCHW.shape[0] % num_classes:
            raise ValueError(f"{static_NCHW.shape[0]} static images do not divide into {num_classes} classes")
        self.num_classes = num_classes
        self.spc, self.dpc = static_NCHW.shape[0] // num_classes, dpc
        self.per_class = max(self.spc, dpc)
        self.register_buffer("static", static_NCHW.detach().clone().float())
        shape = (num_classes * dpc, *dynamic_shape)
        self.dynamic = nn.Parameter(
            initial_dynamic.clone().float() if initial_dynamic is not None else torch.randn(shape)
        )
        self.hallucinator = hallucinator
        self.register_buffer("labels", class_major_labels(num_classes, self.per_class), persistent=False)

    def class_parameters(self) -> list[nn.Parameter]:
        return [self.dynamic]

    def _videos(self, classes: Tensor, static_slot: Tensor, dynamic_slot: Tensor) -> Tensor:
        static = self.static[classes * self.spc + static_slot]
        dynamic = self.dynamic[classes * self.dpc + dynamic_slot]
        return self.hallucinator(static, dynamic)

    def draw(self, indices: Tensor, generator: torch.Generator, keep: Tensor | None = None) -> Tensor:
        classes = indices // self.per_class
        n = len(indices)
        # drawn on the host (the generator's) and sent in one copy that the host does not wait for
        static_slot = torch.randint(self.spc, (n,), generator=generator)
        dynamic_slot = torch.randint(self.dpc, (n,), generator=generator)
        static_slot, dynamic_slot = to_device(torch.stack([static_slot, dynamic_slot]), indices.device)
        if keep is not None:
            classes, static_slot, dynamic_slot = classes[keep], static_slot[keep], dynamic_slot[keep]
        return self._videos(classes, static_slot, dynamic_slot)

    def draw_classes(self, classes: range, generator: torch.Generator) -> Tensor:
        if len(classes) == self.num_classes:
            return self.draw(torch.arange(len(self), device=self.labels.device), generator)
        n = len(self)  # the pairing of every instance is drawn, as one worker would, and this share kept
        static_slot = torch.randint(self.spc, (n,), generator=generator)
        dynamic_slot = torch.randint(self.dpc, (n,), generator=generator)
        rows = slice(classes.start * self.per_class, classes.stop * self.per_class)
        device = self.labels.device
        own = class_major_labels(self.num_classes, self.per_class, device)[rows]
        static_slot, dynamic_slot = to_device(torch.stack([static_slot[rows], dynamic_slot[rows]]), device)
        return self._videos(own, static_slot, dynamic_slot)

    @torch.no_grad()
    def render(self) -> Tensor:
        _, static_index, dynamic_index = render_pairs(self.num_classes, self.spc, self.dpc)
        device = self.static.device
        return self.hallucinator(self.static[static_index.to(device)], self.dynamic[dynamic_index.to(device)])

    def stored_values(self) -> int:
        return self.static.numel() + self.dynamic.numel() + sum(p.numel() for p in self.hallucinator.parameters())


def full_video_values(num_classes: int, ipc: int, clip_shape: tuple[int, int, int, int]) -> int:
    """Numbers in IPC full videos per class: the yardstick every storage ratio is taken against."""
    return num_classes * ipc * math.prod(clip_shape)
