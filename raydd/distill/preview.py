"""An animated GIF of synthetic videos, for a human to glance at during distillation.

Layout: one row per shown video, two panels per row -- the frames in pixel space (left) and the
inter-frame difference (right, normalised per video so that even faint motion is visible) -- separated
by ``SEPARATOR_PX`` dark pixels. The GIF has one frame per video frame; Pillow merges consecutive
identical frames (a fully static preview) into one longer frame, so playback time is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

SEPARATOR_PX = 2
SEPARATOR_GREY = 32


def interframe_difference(videos_NCTHW: Tensor) -> Tensor:
    """|x_t - x_{t-1}| averaged over channels, (N, T, H, W); zero at t = 0 so it lines up with the frames."""
    _check_videos(videos_NCTHW)
    step_NCTHW = (videos_NCTHW[:, :, 1:] - videos_NCTHW[:, :, :-1]).abs()
    diff_NTHW = torch.zeros_like(videos_NCTHW[:, 0])
    diff_NTHW[:, 1:] = step_NCTHW.mean(dim=1)
    return diff_NTHW


def preview_gif(
    videos_NCTHW: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    path: str | Path,
    *,
    max_videos: int = 10,
    scale: int = 2,
    fps: int = 4,
) -> Path:
    _check_videos(videos_NCTHW)
    n, c, t, h, w = videos_NCTHW.shape
    if c not in (1, 3):
        raise ValueError(f"preview needs 1 or 3 channels, got C={c}")
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean and std need one value per channel (C={c}), got {len(mean)} and {len(std)}")
    for name, value in (("max_videos", max_videos), ("scale", scale), ("fps", fps)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")

    rows = min(n, max_videos)
    # floor(i * N / rows) lands in every block of N / K consecutive videos when rows >= K, so a
    # class-major set shows every class.
    chosen = (torch.arange(rows) * n) // rows
    videos = videos_NCTHW.detach()[chosen].cpu().float()
    mean_C, std_C = (torch.tensor(v, dtype=torch.float32).view(1, c, 1, 1, 1) for v in (mean, std))
    pixels_NCTHW = (videos * std_C + mean_C).clamp(0, 1)

    diff_NTHW = interframe_difference(pixels_NCTHW)
    diff_NTHW = diff_NTHW / diff_NTHW.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)

    left_NTHWC = pixels_NCTHW.expand(-1, 3, -1, -1, -1).permute(0, 2, 3, 4, 1)
    right_NTHWC = diff_NTHW.unsqueeze(-1).expand(-1, -1, -1, -1, 3)
    panel_h, panel_w = h * scale, w * scale
    canvas_THWC = torch.full(
        (t, rows * panel_h + (rows - 1) * SEPARATOR_PX, 2 * panel_w + SEPARATOR_PX, 3),
        SEPARATOR_GREY,
        dtype=torch.uint8,
    )
    for row in range(rows):
        top = row * (panel_h + SEPARATOR_PX)
        for left, panel_THWC in ((0, left_NTHWC[row]), (panel_w + SEPARATOR_PX, right_NTHWC[row])):
            upscaled = panel_THWC.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
            canvas_THWC[:, top : top + panel_h, left : left + panel_w] = (upscaled * 255).round().to(torch.uint8)

    frames = [Image.fromarray(frame.numpy()) for frame in canvas_THWC]
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    frames[0].save(
        partial, format="GIF", save_all=True, append_images=frames[1:], loop=0, duration=max(1, round(1000 / fps))
    )
    os.replace(partial, path)
    return path


def _check_videos(videos_NCTHW: Tensor) -> None:
    if videos_NCTHW.dim() != 5:
        raise ValueError(f"videos must be 5-D (N, C, T, H, W), got shape {tuple(videos_NCTHW.shape)}")
    n, _, t, h, w = videos_NCTHW.shape
    if n < 1 or t < 1 or h < 1 or w < 1:
        raise ValueError(f"videos need N, T, H, W >= 1, got shape {tuple(videos_NCTHW.shape)}")


def stills_png(
    static_NCHW: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    path: str | Path,
    *,
    num_classes: int,
    scale: int = 2,
) -> Path:
    """Stage 1's still images as one PNG: a row per class, SPC images a row, in pixel space. Values outside
    real pixels' range are clipped for display, so the picture shows what the stills say, not their scale."""
    if static_NCHW.dim() != 4 or static_NCHW.shape[0] % num_classes:
        raise ValueError(f"stills must be (classes x SPC, C, H, W), got shape {tuple(static_NCHW.shape)}")
    n, c, h, w = static_NCHW.shape
    spc = n // num_classes
    mean_C, std_C = (torch.tensor(v, dtype=torch.float32).view(1, c, 1, 1) for v in (mean, std))
    pixels_NHWC = (
        (static_NCHW.detach().cpu().float() * std_C + mean_C).clamp(0, 1).expand(-1, 3, -1, -1).permute(0, 2, 3, 1)
    )
    side_h, side_w = h * scale, w * scale
    canvas = torch.full(
        (num_classes * side_h + (num_classes - 1) * SEPARATOR_PX, spc * side_w + (spc - 1) * SEPARATOR_PX, 3),
        SEPARATOR_GREY,
        dtype=torch.uint8,
    )
    for index in range(n):
        row, column = divmod(index, spc)
        top, left = row * (side_h + SEPARATOR_PX), column * (side_w + SEPARATOR_PX)
        upscaled = pixels_NHWC[index].repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)
        canvas[top : top + side_h, left : left + side_w] = (upscaled * 255).round().to(torch.uint8)
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    Image.fromarray(canvas.numpy()).save(partial, format="PNG")
    os.replace(partial, path)
    return path
