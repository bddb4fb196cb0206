"""The preview GIF: frame count, layout, motion panel, row choice, and input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raydd.distill.preview import SEPARATOR_PX, interframe_difference, preview_gif, stills_png

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
T, H, W = 4, 8, 8


def _standardise(pixels_NCTHW: torch.Tensor) -> torch.Tensor:
    return (pixels_NCTHW - torch.tensor(MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1, 1)


def _moving_square() -> torch.Tensor:
    pixels = torch.zeros(1, 3, T, H, W)
    for t in range(T):
        pixels[:, :, t, 2:5, t : t + 3] = 1.0
    return pixels


def _static_noise() -> torch.Tensor:
    levels = torch.randint(0, 4, (1, 3, 1, H, W), generator=torch.Generator().manual_seed(0)) / 3
    return levels.expand(-1, -1, T, -1, -1).clone()


def _frames_rgb(path: Path) -> list[torch.Tensor]:
    frames = []
    with Image.open(path) as gif:
        for index in range(gif.n_frames):
            gif.seek(index)
            rgb = gif.convert("RGB")
            frames.append(torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(gif.height, gif.width, 3))
    return frames


def test_interframe_difference_is_channel_mean_of_absolute_steps() -> None:
    videos = torch.tensor([[[0.0, 1.0, 3.0]], [[0.0, -1.0, -1.0]]]).view(1, 2, 3, 1, 1)

    diff = interframe_difference(videos)

    assert diff.shape == (1, 3, 1, 1)
    assert diff.flatten().tolist() == [0.0, 1.0, 1.0]  # (1 + 1) / 2, then (2 + 0) / 2


def test_gif_has_one_frame_per_video_frame_and_the_documented_size(tmp_path: Path) -> None:
    videos = _standardise(_moving_square().repeat(3, 1, 1, 1, 1))
    scale = 3

    path = preview_gif(videos, MEAN, STD, tmp_path / "preview.gif", max_videos=2, scale=scale, fps=5)

    with Image.open(path) as gif:
        assert gif.n_frames == T
        assert gif.size == (2 * W * scale + SEPARATOR_PX, 2 * H * scale + SEPARATOR_PX)
        assert gif.info["loop"] == 0
        assert gif.info["duration"] == 200
    assert [p.name for p in tmp_path.iterdir()] == ["preview.gif"]


def test_difference_panel_is_dark_for_a_static_video_and_bright_for_a_moving_one(tmp_path: Path) -> None:
    videos = _standardise(torch.cat([_static_noise(), _moving_square()]))

    frames = _frames_rgb(preview_gif(videos, MEAN, STD, tmp_path / "preview.gif", scale=1))

    diff_columns = slice(W + SEPARATOR_PX, 2 * W + SEPARATOR_PX)
    static_rows, moving_rows = slice(0, H), slice(H + SEPARATOR_PX, 2 * H + SEPARATOR_PX)
    assert len(frames) == T
    for frame in frames:
        assert frame[static_rows, diff_columns].max() <= 8
    assert frames[0][moving_rows, diff_columns].max() <= 8
    assert all(frame[moving_rows, diff_columns].max() >= 240 for frame in frames[1:])


def test_rows_are_evenly_spaced_so_every_class_of_a_class_major_set_shows(tmp_path: Path) -> None:
    classes, per_class = 5, 4
    grey = torch.arange(classes).repeat_interleave(per_class).float() / (classes - 1)
    videos = _standardise(grey.view(-1, 1, 1, 1, 1).expand(-1, 3, T, H, W))

    frame = _frames_rgb(preview_gif(videos, MEAN, STD, tmp_path / "preview.gif", max_videos=classes, scale=1))[0]

    shown = [frame[row * (H + SEPARATOR_PX), 0, 0].item() for row in range(classes)]
    assert shown == pytest.approx([round(255 * g) for g in grey[::per_class].tolist()], abs=4)


@pytest.mark.parametrize(
    ("shape", "mean", "message"),
    [
        ((3, 4, 8, 8), MEAN, "5-D"),
        ((1, 3, 0, 8, 8), MEAN, "T, H, W >= 1"),
        ((1, 3, 4, 8, 8), (0.5, 0.5), "one value per channel"),
    ],
)
def test_bad_inputs_raise_value_error(
    tmp_path: Path, shape: tuple[int, ...], mean: tuple[float, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        preview_gif(torch.zeros(shape), mean, STD, tmp_path / "preview.gif")


def test_interframe_difference_rejects_a_non_video() -> None:
    with pytest.raises(ValueError, match="5-D"):
        interframe_difference(torch.zeros(2, 3, 8, 8))


def test_stills_png_shows_each_class_in_a_row_in_pixel_space(tmp_path: Path) -> None:
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    stills = torch.zeros(3 * 2, 3, 4, 4)  # 3 classes x SPC 2; class k's images at pixel value k / 2
    for k in range(3):
        stills[2 * k : 2 * k + 2] = (k / 2 - 0.5) / 0.25
    stills[5, 0] = 100.0  # far outside the pixel range: shown clipped, not rescaled
    path = stills_png(stills, mean, std, tmp_path / "stills.png", num_classes=3, scale=1)
    image = np.asarray(Image.open(path))
    assert image.shape == (3 * 4 + 2 * SEPARATOR_PX, 2 * 4 + SEPARATOR_PX, 3)
    assert image[0, 0].tolist() == [0, 0, 0] and image[4 + SEPARATOR_PX, 0].tolist() == [128, 128, 128]
    assert image[-1, -1].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="classes x SPC"):
        stills_png(stills[:5], mean, std, tmp_path / "bad.png", num_classes=3)
