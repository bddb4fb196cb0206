"""The one standardisation of real clips: what it computes, that it never edits its input, and that evaluation's
and distillation's readers of a prepared split give a clip the same values through it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raydd.data.reader import Standardiser, open_prepared
from raydd.distill.real import RealData, RealDraw
from raydd.evaluation.sources import RealClips

CPU = torch.device("cpu")


def test_clips_become_channel_first_floats_standardised_per_channel() -> None:
    frames = torch.randint(0, 256, (2, 3, 4, 5, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    kept = frames.clone()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    videos = Standardiser(mean, std)(frames, CPU)
    assert videos.shape == (2, 3, 3, 4, 5) and videos.dtype == torch.float32
    for c in range(3):
        expected = (frames[..., c].float() - 255 * mean[c]) / (255 * std[c])
        assert torch.allclose(videos[:, c], expected, atol=1e-5)
    assert torch.equal(frames, kept)  # the stored frames are never edited
    low, high = Standardiser(mean, std).pixel_range()
    assert torch.allclose(low, torch.tensor([-2.0, -2.0, -2.0])) and torch.allclose(
        high, torch.tensor([3.0, 2.0, 4 / 3])
    )
    with pytest.raises(TypeError, match="uint8"):
        Standardiser(mean, std)(videos, CPU)


def test_evaluation_and_distillation_read_a_clip_as_the_same_values(tiny_datasets: Path) -> None:
    dataset = open_prepared(str(tiny_datasets / "builtin"))
    train = dataset.split("train")
    rows = torch.tensor([7, 2, 11])
    from_evaluation, _ = RealClips(train, dataset.mean, dataset.std).batch(rows, CPU)
    distill = RealData(train, dataset.mean, dataset.std, CPU, frames=False)
    from_distillation = distill.load(RealDraw(rows))
    assert torch.equal(from_evaluation, from_distillation)
    assert from_evaluation.min() >= distill.pixel_range()[0].min() - 1e-6
