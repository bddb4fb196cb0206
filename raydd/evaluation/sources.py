"""Training and test sets as batch sources in model-input space (float, standardised, (N, C, T, H, W)).

Real clips stay uint8 until a batch is on the device; distilled sets already live in model-input space.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from raydd.data.reader import PreparedVideos
from raydd.data.standardise import Standardiser


class BatchSource(Protocol):
    labels: torch.Tensor

    def __len__(self) -> int: ...
    def batch(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]: ...


class RealClips:
    """Clips of a prepared split (all, or the subset ``indices``), standardised with ``mean``/``std``."""

    def __init__(
        self, videos: PreparedVideos, mean: tuple[float, ...], std: tuple[float, ...], indices: np.ndarray | None = None
    ) -> None:
        self.videos = videos
        self.indices = np.arange(len(videos)) if indices is None else np.asarray(indices)
        self.labels = videos.labels[torch.from_numpy(self.indices)]
        self._standardise = Standardiser(mean, std)

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        frames_NTHWC, labels = self.videos.batch(self.indices[indices.numpy()])
        return self._standardise(frames_NTHWC, device), labels.to(device)


class TensorClips:
    """A distilled set: videos already in model-input space."""

    def __init__(self, videos_NCTHW: torch.Tensor, labels: torch.Tensor) -> None:
        self.videos = videos_NCTHW
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.videos[indices].to(device), self.labels[indices].to(device)
