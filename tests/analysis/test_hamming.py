"""The Suppl. 9.1 motion score and the half-split grouping."""

from __future__ import annotations

import pytest
import torch

from raydd.analysis.grouping import DYNAMIC, STATIC, agreement, split_half
from raydd.analysis.hamming import FEATURE_DEPTH, clip_scores
from raydd.errors import RayddError
from raydd.models.registry import build_model


def _clip(step: int, seed: int, frames: int = 8, size: int = 32) -> torch.Tensor:
    """A textured sprite on a background, fresh pixel noise in every frame, moving ``step`` pixels a frame."""
    generator = torch.Generator().manual_seed(seed)
    canvas = torch.zeros(3, size, size)
    canvas[:, 4:14, 4:14] = torch.rand(3, 10, 10, generator=generator) + 1.0
    frames_CTHW = [
        canvas.roll(shifts=(step * t, step * t), dims=(1, 2)) + 0.3 * torch.randn(3, size, size, generator=generator)
        for t in range(frames)
    ]
    return torch.stack(frames_CTHW, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_moving_clip_scores_above_a_static_one(seed: int) -> None:
    torch.manual_seed(seed)
    net = build_model("convnet", num_classes=4, clip_shape=(8, 32, 32, 3), depth=FEATURE_DEPTH, net_width=32).eval()
    static, moving = _clip(0, seed), _clip(3, seed)
    scores = clip_scores(net, torch.stack([static, moving]))
    assert 0 < scores[0] < scores[1] <= 1
    still = static[:, :1].expand(-1, 8, -1, -1)[None]  # one frame repeated: no bit flips at all
    assert clip_scores(net, still).item() == 0


def test_one_frame_clips_have_no_score() -> None:
    net = build_model("convnet", num_classes=2, clip_shape=(1, 16, 16, 3), depth=FEATURE_DEPTH, net_width=8).eval()
    with pytest.raises(RayddError, match="at least 2 frames"):
        clip_scores(net, torch.zeros(1, 3, 1, 16, 16))


def test_the_lower_half_is_static_and_agreement_counts_matches() -> None:
    groups = split_half([0.3, 0.1, 0.2, 0.4])
    assert groups == [DYNAMIC, STATIC, STATIC, DYNAMIC]
    assert split_half([0.5, 0.1, 0.9]) == [DYNAMIC, STATIC, DYNAMIC]
    assert agreement(groups, [STATIC, STATIC, STATIC, DYNAMIC]) == 0.75
    assert agreement(groups, [None] * 4) is None
