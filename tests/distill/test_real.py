"""Real clips as matching data: the staged, prefetched path gives exactly what a direct read gives."""

from __future__ import annotations

from pathlib import Path

import torch

from raydd.data.reader import Standardiser, open_prepared
from raydd.distill.real import RealData, RealDraw

CPU = torch.device("cpu")


def _expected(real: RealData, draw: RealDraw) -> torch.Tensor:
    frames_NTHWC, _ = real.videos.batch(draw.rows.numpy())
    if draw.frames is not None:
        frames_NTHWC = frames_NTHWC[torch.arange(len(draw)), draw.frames].unsqueeze(1)
    videos = Standardiser(real.videos.dataset.mean, real.videos.dataset.std)(frames_NTHWC, CPU)
    return videos[:, :, 0] if draw.frames is not None else videos


def test_stream_and_load_equal_a_direct_read_in_drawn_order(tiny_datasets: Path) -> None:
    dataset = open_prepared(str(tiny_datasets / "builtin"))
    for frames in (False, True):
        real = RealData(dataset.split("train"), dataset.mean, dataset.std, CPU, frames=frames)
        draw = real.draw_per_class(3, torch.Generator().manual_seed(1))  # class-major: not ascending rows
        assert not torch.equal(draw.rows, torch.sort(draw.rows).values)
        chunks = draw.chunks(4)
        streamed = list(real.stream(chunks))
        assert len(streamed) == len(chunks)
        for chunk, clips in zip(chunks, streamed, strict=True):
            assert torch.equal(clips, _expected(real, chunk))
            assert torch.equal(real.load(chunk), clips)


def test_resident_clips_are_gathered_on_the_device_with_the_same_values(tiny_datasets: Path) -> None:
    dataset = open_prepared(str(tiny_datasets / "builtin"))
    for frames in (False, True):
        real = RealData(dataset.split("train"), dataset.mean, dataset.std, CPU, frames=frames)
        draw = real.draw_per_class(2, torch.Generator().manual_seed(3))
        before = [real.load(chunk) for chunk in draw.chunks(5)]
        real.keep_resident(real.rows_of(range(real.num_classes)))
        after = list(real.stream(draw.chunks(5)))
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
