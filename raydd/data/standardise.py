"""The one standardisation of real clips: uint8 frames as stored, (N, T, H, W, C), become model input,
float (N, C, T, H, W), ``(x - 255 * mean) / (255 * std)`` per channel with the dataset's mean/std.

Evaluation and experts (:mod:`raydd.evaluation.sources`) and distillation (:mod:`raydd.distill.real`) both
standardise through :class:`Standardiser`, so a clip means the same to every network. It works in place on the
float copy it makes on the device: out of place, a chunk was held as three float copies at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class Standardiser:
    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | None = None) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1, 1) * 255

    def __call__(self, frames_NTHWC: Tensor, device: torch.device) -> Tensor:
        """uint8 (N, T, H, W, C), anywhere -> standardised float (N, C, T, H, W) on ``device``."""
        if frames_NTHWC.dtype != torch.uint8:  # .float() of a float tensor is the tensor itself: never edit it
            raise TypeError(f"expected uint8 frames, got {frames_NTHWC.dtype}")
        videos = frames_NTHWC.to(device, non_blocking=True).permute(0, 4, 1, 2, 3).float()
        return videos.sub_(self.mean.to(device)).div_(self.std.to(device))

    def pixel_range(self) -> tuple[Tensor, Tensor]:
        """Per channel, the standardised values of pixel 0 and pixel 255 (on the CPU): the range real clips span."""
        low, high = (0 - self.mean) / self.std, (255 - self.mean) / self.std
        return low.flatten().cpu(), high.flatten().cpu()
