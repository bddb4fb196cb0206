"""Real training clips as matching data: uint8 until a batch is on the device, then standardised.

``frames=True`` is stage 1's view (one random frame per clip, (N, C, H, W)); otherwise whole clips
(N, C, T, H, W). ``indices`` restricts the data to a subset of the split (a sweep holds out its
validation clips this way). Batches are drawn from an explicit ``torch.Generator`` so that every matching sample
is reproducible from its seed, whichever worker draws it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from raydd.data.reader import PreparedVideos
from raydd.errors import RayddError


class RealData:
    def __init__(
        self, videos: PreparedVideos, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, *, frames: bool, indices: np.ndarray | None = None
    ) -> None:
        self.videos = videos
        self.device = device
        self.frames = frames
        self.num_classes = len(videos.dataset.classes)
        self.indices = torch.arange(len(videos)) if indices is None else torch.as_tensor(np.array(indices, dtype=np.int64))
        labels = videos.labels[self.indices]
        self.class_indices = [self.indices[torch.nonzero(labels == c).flatten()] for c in range(self.num_classes)]
        empty = [videos.dataset.classes[c] for c, idx in enumerate(self.class_indices) if len(idx) == 0]
        if empty:
            raise RayddError(f"class {empty[0]!r} has no training clips in {videos.dataset.location}: re-prepare the dataset with clips of every class")
        self._mean = torch.tensor(mean, device=device).view(1, -1, 1, 1, 1) * 255
        self._std = torch.tensor(std, device=device).view(1, -1, 1, 1, 1) * 255

    def _inputs(self, indices: Tensor, generator: torch.Generator) -> Tensor:
        frames_NTHWC, _ = self.videos.batch(indices.numpy())
        if self.frames:
            pick = torch.randint(frames_NTHWC.shape[1], (len(indices),), generator=generator)
            frames_NTHWC = frames_NTHWC[torch.arange(len(indices)), pick].unsqueeze(1)
        videos = frames_NTHWC.to(self.device, non_blocking=True).permute(0, 4, 1, 2, 3).float()
        videos.sub_(self._mean).div_(self._std)  # in place: out of place held 3 float copies (~23 GB for DM's 64 x 50 MiniUCF clips)
        return videos[:, :, 0] if self.frames else videos

    def per_class(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` clips of every class, class-major: (num_classes * n, ...). Without replacement where a
        class has at least ``n`` clips."""
        chosen = []
        for idx in self.class_indices:
            if len(idx) >= n:
                chosen.append(idx[torch.randperm(len(idx), generator=generator)[:n]])
            else:
                chosen.append(idx[torch.randint(len(idx), (n,), generator=generator)])
        return self._inputs(torch.cat(chosen), generator)

    def random(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` clips drawn uniformly from the split and their labels."""
        indices = self.indices[torch.randperm(len(self.indices), generator=generator)[:n]]
        return self._inputs(indices, generator), self.videos.labels[indices].to(self.device)
