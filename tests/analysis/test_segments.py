"""Uniform temporal segmentation: which real frames each synthetic frame stands for."""

from __future__ import annotations

import pytest
import torch

from raydd.analysis.segments import expand, segment_centres, segment_draw, segment_edges, segment_of_frame


def test_segments_are_uniform_and_cover_every_frame() -> None:
    assert segment_edges(8, 4).tolist() == [0, 2, 4, 6, 8]
    assert segment_of_frame(8, 2).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    sizes = segment_edges(10, 4).diff()
    assert sizes.sum() == 10 and sizes.max() - sizes.min() <= 1  # uneven T: sizes differ by at most one
    with pytest.raises(ValueError):
        segment_edges(4, 5)


def test_expand_repeats_frame_k_over_segment_k() -> None:
    videos = torch.arange(2 * 1 * 4 * 1 * 1, dtype=torch.float32).view(2, 1, 4, 1, 1)  # K = 4 frames
    stretched = expand(videos, 8)
    assert stretched.shape == (2, 1, 8, 1, 1)
    assert stretched[0, 0, :, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert segment_centres(stretched, 4)[..., 0, 0].equal(videos[..., 0, 0])  # the round trip is exact


def test_segment_draws_stay_in_their_segment_and_reach_every_frame() -> None:
    frames = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1, 1).expand(50, 3, 8, 2, 2)
    generator = torch.Generator().manual_seed(0)
    picked = segment_draw(frames, 2, generator)[:, 0, :, 0, 0]  # (50, 2) frame numbers
    assert ((picked[:, 0] >= 0) & (picked[:, 0] < 4)).all() and ((picked[:, 1] >= 4) & (picked[:, 1] < 8)).all()
    assert set(picked.flatten().long().tolist()) == set(range(8))
    assert segment_draw(frames, 2, torch.Generator().manual_seed(0)).equal(
        segment_draw(frames, 2, torch.Generator().manual_seed(0))
    )
