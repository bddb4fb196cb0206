"""Decode one video with PyAV into a fixed-size uint8 clip, decoding only the frames the clip keeps.

Frames are sampled by presentation time: the frame on screen at the centre of each of T equal segments
of the video's duration (Suppl. 8: uniform segments work best), from its first frame's timestamp to the
end of its last as the packets say, so a header that misstates the length shifts nothing. On a
constant-frame-rate file that is the centre frame of T equal segments of its frames; on a
variable-frame-rate one (irregular timestamps, dropped frames) it is the frame a viewer sees at that
moment. Each kept frame is scaled so that it covers H x W and centre-cropped, so the aspect ratio is
never distorted.

Cost: one pass reads the packets (compressed data, nothing decoded) to learn every frame's timestamp
and the keyframes; then, for each wanted frame, decoding seeks to the keyframe before it and runs only
until that frame comes out. Wanted frames that share a keyframe are decoded in one run. When that plan
cannot be followed (no timestamps, a seek that lands past the frame), every frame is decoded instead.
"""

from __future__ import annotations

import bisect
import dataclasses
import io
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

# A file whose frames end before this fraction of the duration its container states is truncated (an
# interrupted download); a gap or dropped frames inside a valid file never come near it.
TRUNCATED_BELOW = 0.5


class VideoDecodeError(Exception):
    """The file is not a readable video (corrupt, truncated, no video stream)."""


class _PlanFailed(Exception):
    """Sampling by timestamps is not possible for this file: decode every frame instead."""


def uniform_indices(num_available: int, num_frames: int) -> np.ndarray:
    """Centre of each of ``num_frames`` equal segments of ``num_available`` frames (repeats if too few)."""
    positions = (np.arange(num_frames) + 0.5) * num_available / num_frames
    return np.minimum(positions.astype(np.int64), num_available - 1)


def sample_by_time(timestamps: list[int], end: int, num_frames: int) -> list[int]:
    """Positions in sorted ``timestamps`` of the frames on screen at the centre of ``num_frames`` equal time
    segments of [first timestamp, ``end``) (repeats if there are too few frames).

    The centres move later by 1/(4T) of an average frame (half the least distance between a centre and
    a frame's edge on a constant-frame-rate file), so that timestamps rounded to the container's time
    base (a 30 fps file in milliseconds) still pick the frames that frame-index sampling picks.
    """
    first, count = timestamps[0], len(timestamps)
    span = Fraction(max(end - first, 1))
    chosen = []
    for i in range(num_frames):
        target = first + span * (Fraction(2 * i + 1, 2 * num_frames) + Fraction(1, 4 * num_frames * count))
        chosen.append(max(bisect.bisect_right(timestamps, target) - 1, 0))
    return chosen


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


@dataclasses.dataclass(frozen=True)
class _Index:
    """Every frame's packet, in decode order, as one read of the packets (no decoding) finds them."""

    pts: list[int]  # presentation timestamps, decode order
    keyframe: list[bool]
    shown: list[int]  # sorted timestamps of the frames a player shows (not those an edit list cuts away)
    end: int  # when the last frame stops being shown (its timestamp plus its duration)

    def keyframe_before(self, position: int) -> int:
        """Decode-order position of the last keyframe shown no later than the frame at ``position``: decoding
        from there yields that frame (also in open GOPs, whose leading frames are shown before their keyframe)."""
        shown = self.pts[position]
        candidates = [p for p in range(len(self.pts)) if self.keyframe[p] and self.pts[p] <= shown]
        if not candidates:
            raise _PlanFailed("no keyframe before a wanted frame")
        return max(candidates)


def _read_index(container: av.container.InputContainer, stream: av.VideoStream) -> _Index | None:
    """The frame index from one pass over the packets; None when a packet has no timestamp."""
    pts, keyframe, durations, shown = [], [], [], []
    for packet in container.demux(stream):
        if packet.size == 0:  # the end-of-stream marker
            continue
        if packet.pts is None:
            return None
        pts.append(int(packet.pts))
        keyframe.append(bool(packet.is_keyframe))
        durations.append(int(packet.duration or 0))
        if not packet.is_discard:
            shown.append(int(packet.pts))
    if not shown:
        return _Index([], [], [], 0)
    last = max(range(len(pts)), key=pts.__getitem__)
    step = durations[last]
    if step <= 0:  # no stated duration: the typical gap between frames
        gaps = np.diff(sorted(set(shown)))
        step = int(np.median(gaps)) if len(gaps) else 1
    return _Index(pts, keyframe, sorted(shown), pts[last] + step)


def _decode_planned(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    index: _Index,
    wanted: set[int],
    height: int,
    width: int,
) -> dict[int, np.ndarray]:
    """The frames whose timestamps are in ``wanted``, decoding from the keyframe before each one only as far as it."""
    position_of = {pts: position for position, pts in enumerate(index.pts)}
    codec = stream.codec_context
    kept: dict[int, np.ndarray] = {}
    packets = None  # the running demuxer
    sought = False  # no packet read since the last seek
    next_position = 0  # decode-order position of the packet it yields next
    for pts in sorted(wanted):
        if pts in kept:
            continue
        start = index.keyframe_before(position_of[pts])
        if packets is None or start > next_position:  # a keyframe lies ahead: skip to it
            container.seek(index.pts[start], stream=stream, backward=True)
            codec.flush_buffers()
            packets, sought = container.demux(stream), True
        for packet in packets:
            if packet.size:
                if packet.pts is None or int(packet.pts) not in position_of:
                    raise _PlanFailed("a packet the index does not list")
                next_position = position_of[int(packet.pts)] + 1
                if sought and next_position - 1 > start:  # an imprecise seek (MPEG-TS): frames would miss references
                    raise _PlanFailed("the seek landed after the keyframe")
                sought = False
                # a frame nothing refers to and nobody wants need not be decoded at all (B-frames, mostly)
                codec.skip_frame = "DEFAULT" if int(packet.pts) in wanted else "NONREF"
            for frame in packet.decode():
                if frame.pts in wanted and frame.pts not in kept:
                    kept[frame.pts] = _to_rgb(frame, height, width)
            if pts in kept:
                break
        if pts not in kept:  # the seek landed after the frame, or the decoder never gave it
            raise _PlanFailed(f"frame at {pts} not decoded")
    return kept


def _truncated(shown: float, stated: float) -> VideoDecodeError:
    return VideoDecodeError(f"truncated: frames end after {shown:.2f} s of the {stated:.2f} s the file states")


def _decode_all(file: BinaryIO, num_frames: int, height: int, width: int) -> np.ndarray:
    """Every frame decoded and converted, then sampled by position: for files whose timestamps cannot be planned on."""
    container, stream = _open_video(file)
    with container:
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(_to_rgb(frame, height, width))
            times.append(frame.time)
        stated = _stated_seconds(container, stream)
        step = 1 / float(stream.average_rate) if stream.average_rate else 0.0
    if not frames:
        raise VideoDecodeError("no decodable frames")
    if stated and None not in times and max(times) - min(times) + step < TRUNCATED_BELOW * stated:
        raise _truncated(max(times) - min(times) + step, stated)
    return np.stack([frames[int(i)] for i in uniform_indices(len(frames), num_frames)])


def decode_clip(file: BinaryIO, num_frames: int, height: int, width: int) -> np.ndarray:
    """(num_frames, height, width, 3) uint8 frames sampled by presentation time from the video in ``file``.

    A file is truncated (:class:`VideoDecodeError`) when it cannot be decoded, or when its frames end
    before :data:`TRUNCATED_BELOW` of the duration its container states. Fewer frames than the header
    says (dropped frames, variable frame rate) is fine as long as the timestamps reach that far.
    """
    try:
        file.seek(0, io.SEEK_END)
        if file.tell() == 0:  # a failed download; PyAV would raise a bare OSError
            raise VideoDecodeError("empty file")
        container, stream = _open_video(file)
        with container:
            index = _read_index(container, stream)
            if index is not None and not index.shown:
                raise VideoDecodeError("no decodable frames")
            stated = _stated_seconds(container, stream)
            if index is not None:
                seconds = float((index.end - index.shown[0]) * stream.time_base)
                if stated and seconds < TRUNCATED_BELOW * stated:
                    raise _truncated(seconds, stated)
                chosen = [index.shown[i] for i in sample_by_time(index.shown, index.end, num_frames)]
                try:
                    kept = _decode_planned(container, stream, index, set(chosen), height, width)
                    return np.stack([kept[pts] for pts in chosen])
                except _PlanFailed:
                    pass
        return _decode_all(file, num_frames, height, width)
    except VideoDecodeError:
        raise
    except (av.FFmpegError, EOFError, ValueError, IndexError, UnicodeDecodeError) as error:
        raise VideoDecodeError(f"{type(error).__name__}: {error}") from None
