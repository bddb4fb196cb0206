"""Uniform temporal segmentation: K synthetic frames stand for the T real frames, frame k for segment k.

The T real frames are cut into K segments of (nearly) equal size, the split the paper found best
(Suppl. Tab. 7). In matching, a real clip is seen at K frames, one drawn at random inside each segment
(every real frame is used over the iterations); for training an evaluator, a K-frame synthetic video
becomes a T-frame one by repeating frame k over segment k (duplication, the plainest interpolation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def segment_edges(frames: int, segments: int) -> Tensor:
    """(K + 1,) int64 boundaries: segment k holds frames ``edges[k] <= t < edges[k + 1]``."""
    if not 1 <= segments <= frames:
        raise ValueError(f"{segments} segments of {frames} frames: need 1 <= segments <= frames")
    return torch.tensor([k * frames // segments for k in range(segments + 1)])


def segment_of_frame(frames: int, segments: int) -> Tensor:
    """(T,) the segment each real frame falls in."""
    edges = segment_edges(frames, segments)
    return torch.searchsorted(edges, torch.arange(frames), right=True) - 1


def expand(videos_NCKHW: Tensor, frames: int) -> Tensor:
    """K-frame videos to T frames, frame k repeated over segment k (differentiable)."""
    return videos_NCKHW[:, :, segment_of_frame(frames, videos_NCKHW.shape[2]).to(videos_NCKHW.device)]


def segment_centres(videos_NCTHW: Tensor, segments: int) -> Tensor:
    """The middle frame of each segment: a T-frame clip seen at K frames, deterministically."""
    edges = segment_edges(videos_NCTHW.shape[2], segments)
    return videos_NCTHW[:, :, ((edges[:-1] + edges[1:] - 1) // 2).to(videos_NCTHW.device)]


def segment_draw(videos_NCTHW: Tensor, segments: int, generator: torch.Generator) -> Tensor:
    """One random frame inside each segment, drawn per clip: (N, C, K, H, W)."""
    n, t = videos_NCTHW.shape[0], videos_NCTHW.shape[2]
    edges = segment_edges(t, segments)
    sizes = edges[1:] - edges[:-1]
    picks = edges[:-1] + (torch.rand((n, segments), generator=generator) * sizes).long()  # (N, K)
    picks = picks.to(videos_NCTHW.device)
    index = picks[:, None, :, None, None].expand(-1, videos_NCTHW.shape[1], -1, *videos_NCTHW.shape[3:])
    return torch.gather(videos_NCTHW, 2, index)


class SegmentMatching(nn.Module):
    """A matching network for K-frame synthetic videos: real T-frame clips given to :meth:`embed` are
    first reduced to K frames by :func:`segment_draw`; K-frame inputs pass through unchanged."""

    def __init__(self, net: nn.Module, *, frames: int, segments: int, generator: torch.Generator) -> None:
        super().__init__()
        self.net, self.frames, self.segments, self.generator = net, frames, segments, generator

    def embed(self, videos_NCTHW: Tensor) -> Tensor:
        if videos_NCTHW.shape[2] != self.segments:
            videos_NCTHW = segment_draw(videos_NCTHW, self.segments, self.generator)
        return self.net.embed(videos_NCTHW)

    def forward(self, videos_NCTHW: Tensor) -> Tensor:
        return self.net(videos_NCTHW)
