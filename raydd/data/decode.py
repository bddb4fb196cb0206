"""Decode one video with PyAV into a fixed-size uint8 clip.

Frames are sampled uniformly over the whole video (the centre of each of T equal segments, Suppl. 8:
uniform segments work best) and each kept frame is scaled so that it covers H x W and centre-cropped,
so the aspect ratio is never distorted.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import av
import numpy as np


class VideoDecodeError(Exception):
    """The file is not a readable video (corrupt, truncated, no video stream)."""


def uniform_indices(num_available: int, num_frames: int) -> np.ndarray:
    """Centre of each of ``num_frames`` equal segments of ``num_available`` frames (repeats if too few)."""
    positions = (np.arange(num_frames) + 0.5) * num_available / num_frames
    return np.minimum(positions.astype(np.int64), num_available - 1)


# PyAV >= 17 lets swscale run threaded by default; one clip per core is our parallelism, so ask for one.
_REFORMAT_THREADS = {"threads": 1} if "threads" in (av.VideoFrame.reformat.__doc__ or "") else {}


def _to_rgb(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    scale = max(height / frame.height, width / frame.width)
    scaled_h, scaled_w = max(height, round(frame.height * scale)), max(width, round(frame.width * scale))
    rgb = frame.reformat(width=scaled_w, height=scaled_h, format="rgb24", **_REFORMAT_THREADS).to_ndarray()
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    return rgb[top : top + height, left : left + width]


def _open_video(file: BinaryIO) -> tuple[av.container.InputContainer, av.VideoStream]:
    file.seek(0)
    container = av.open(file, mode="r")
    if not container.streams.video:
        container.close()
        raise VideoDecodeError("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"  # one decode thread per clip: parallelism comes from Ray tasks
    stream.codec_context.thread_count = 1
    return container, stream


def _decode_frames(container: av.container.InputContainer, stream: av.VideoStream, wanted: set[int] | None, height: int, width: int) -> tuple[dict[int, np.ndarray], int]:
    """Decode every frame, converting those in ``wanted`` (all if None); returns the frames and the count."""
    kept: dict[int, np.ndarray] = {}
    count = 0
    for frame in container.decode(stream):
        if wanted is None or count in wanted:
            kept[count] = _to_rgb(frame, height, width)
        count += 1
    return kept, count


def _stated_seconds(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    """How long the file says its video lasts (0.0 if it does not say)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION", "")  # matroska/webm: per-track "HH:MM:SS.nnnnnnnnn"
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return container.duration / av.time_base if container.duration else 0.0


def _stated_count(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """Frames the container states: its frame count, else its duration times its frame rate (webm, mkv)."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate
    return int(_stated_seconds(container, stream) * float(rate)) if rate else 0


def decode_clip(file: BinaryIO, num_frames: int, height: int, width: int) -> np.ndarray:
    """(num_frames, height, width, 3) uint8 frames sampled uniformly from the video in ``file``.

    When the container states its frame count, only the sampled frames are converted to RGB; when it
    does not (webm, some mkv) or states it wrongly, every frame is converted and sampled afterwards.
    A file that ends well short of its stated length (its frame count, or for webm/mkv its duration
    times its frame rate) is treated as truncated.
    """
    try:
        file.seek(0, io.SEEK_END)
        if file.tell() == 0:  # a failed download; PyAV would raise a bare OSError
            raise VideoDecodeError("empty file")
        file.seek(0)
        container, stream = _open_video(file)
        with container:
            header_count = int(stream.frames or 0)
            stated_count = _stated_count(container, stream)
            wanted = set(uniform_indices(header_count, num_frames).tolist()) if header_count > 0 else None
            kept, count = _decode_frames(container, stream, wanted, height, width)
        if count == 0:
            raise VideoDecodeError("no decodable frames")
        if stated_count and count < stated_count // 2:
            raise VideoDecodeError(f"truncated: {count} of {stated_count} frames decodable")
        indices = uniform_indices(count, num_frames)
        if not all(int(i) in kept for i in indices):  # the stated frame count was wrong: convert all
            container, stream = _open_video(file)
            with container:
                kept, count = _decode_frames(container, stream, None, height, width)
            indices = uniform_indices(count, num_frames)
        return np.stack([kept[int(i)] for i in indices])
    except VideoDecodeError:
        raise
    except (av.FFmpegError, EOFError, ValueError, IndexError, UnicodeDecodeError) as error:
        raise VideoDecodeError(f"{type(error).__name__}: {error}") from None
