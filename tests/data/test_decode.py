"""PyAV decoding of real (tiny) video files written by the tests: sizes, sampling, cropping, bad files."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from raydd.data.decode import VideoDecodeError, decode_clip, sample_by_time, uniform_indices
from tests.data.videos import (
    FORMATS,
    encode_timed_video,
    encode_video,
    ramp_frames,
    ramp_value,
    set_avi_frame_count,
    write_video,
)

ALL_FORMATS = [(container, codec) for container, codecs in FORMATS.items() for codec in codecs]
TOLERANCE = 6  # grey levels lost to YUV conversion and lossy codecs on flat frames


def brightness(frames_THWC: np.ndarray) -> np.ndarray:
    return frames_THWC.reshape(len(frames_THWC), -1).mean(axis=1)


@pytest.mark.parametrize(("container", "codec"), ALL_FORMATS, ids=[f"{c}-{k}" for c, k in ALL_FORMATS])
def test_decode_every_container_samples_uniformly(tmp_path: Path, container: str, codec: str) -> None:
    path = write_video(tmp_path / f"clip.{container}", ramp_frames(16, 24, 32), codec)
    with open(path, "rb") as handle:
        clip = decode_clip(handle, 4, 16, 16)
    assert clip.shape == (4, 16, 16, 3) and clip.dtype == np.uint8
    # the centre of each of 4 segments of 16 frames: frames 2, 6, 10, 14
    expected = [ramp_value(t, 16) for t in (2, 6, 10, 14)]
    np.testing.assert_allclose(brightness(clip), expected, atol=TOLERANCE)
    assert np.all(np.diff(brightness(clip)) > 30)
    # flat frames stay flat: no smearing, no border from scaling
    assert clip.std(axis=(1, 2, 3)).max() < 3


@pytest.mark.parametrize(("container", "codec"), [("mp4", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4")])
def test_decode_output_size_is_the_requested_one(container: str, codec: str) -> None:
    data = encode_video(ramp_frames(6, 30, 50), container, codec)  # odd aspect, not a multiple of the output
    for size in [(16, 16), (8, 24), (24, 8), (48, 64)]:  # smaller, wider, taller, larger than the source
        clip = decode_clip(io.BytesIO(data), 3, *size)
        assert clip.shape == (3, *size, 3) and clip.dtype == np.uint8


def test_decode_single_frame_and_whole_video() -> None:
    data = encode_video(ramp_frames(5, 24, 32), "mp4", "libx264")
    one = decode_clip(io.BytesIO(data), 1, 16, 16)
    np.testing.assert_allclose(brightness(one), [ramp_value(2, 5)], atol=TOLERANCE)  # the middle frame
    every = decode_clip(io.BytesIO(data), 5, 16, 16)
    np.testing.assert_allclose(brightness(every), [ramp_value(t, 5) for t in range(5)], atol=TOLERANCE)


@pytest.mark.parametrize(("container", "codec"), [("mp4", "libx264"), ("mkv", "ffv1")])
def test_fewer_source_frames_than_requested_repeats_frames(container: str, codec: str) -> None:
    data = encode_video(ramp_frames(3, 24, 32), container, codec)
    clip = decode_clip(io.BytesIO(data), 8, 16, 16)
    assert clip.shape == (8, 16, 16, 3)
    indices = uniform_indices(3, 8)
    assert indices.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    np.testing.assert_allclose(brightness(clip), [ramp_value(int(t), 3) for t in indices], atol=TOLERANCE)
    # repeated frames are identical copies, not re-decodes that could differ
    assert np.array_equal(clip[0], clip[1]) and np.array_equal(clip[5], clip[7])


@pytest.mark.parametrize("stated", [8, 30], ids=["states-fewer", "states-more"])
def test_wrong_stated_frame_count_still_samples_the_real_frames(stated: int) -> None:
    """A header that misstates the frame count (within a factor of 2) must not shift or break sampling."""
    data = set_avi_frame_count(encode_video(ramp_frames(16, 24, 32), "avi"), stated)
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].frames == stated  # the decoder believes the header
    clip = decode_clip(io.BytesIO(data), 4, 16, 16)
    np.testing.assert_allclose(brightness(clip), [ramp_value(t, 16) for t in (2, 6, 10, 14)], atol=TOLERANCE)


def test_bframes_are_sampled_in_display_order() -> None:
    data = encode_video(ramp_frames(24, 24, 32), "mp4", "libx264")
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].codec_context.has_b_frames
    clip = decode_clip(io.BytesIO(data), 6, 16, 16)
    np.testing.assert_allclose(brightness(clip), [ramp_value(t, 24) for t in (2, 6, 10, 14, 18, 22)], atol=TOLERANCE)


def _box_frames(height: int, width: int) -> np.ndarray:
    """White frames with a black square in the middle and black bars at both ends of the long side."""
    frames = np.full((2, height, width, 3), 235, np.uint8)
    long_side = max(height, width)
    bar, half = long_side // 8, min(height, width) // 4
    cy, cx = height // 2, width // 2
    frames[:, cy - half : cy + half, cx - half : cx + half] = 16
    if width > height:
        frames[:, :, :bar], frames[:, :, -bar:] = 16, 16
    else:
        frames[:, :bar], frames[:, -bar:] = 16, 16
    return frames


@pytest.mark.parametrize("shape", [(32, 64), (64, 32)], ids=["wide", "tall"])
@pytest.mark.parametrize(("container", "codec"), [("mkv", "ffv1"), ("mp4", "libx264")])
def test_non_square_source_is_centre_cropped_not_stretched(shape: tuple[int, int], container: str, codec: str) -> None:
    data = encode_video(_box_frames(*shape), container, codec)
    clip = decode_clip(io.BytesIO(data), 2, 16, 16)
    dark = clip[0].mean(axis=-1) < 128
    # Scaled by 1/2 so that the short side is 16, then the middle 16 of the long side are kept: the
    # 16x16 black square becomes an 8x8 square in the centre, and the bars at the ends are cut away.
    # Stretching instead would give an 8x4 (or 4x8) rectangle and black bars at two edges.
    expected = np.zeros((16, 16), bool)
    expected[4:12, 4:12] = True
    assert np.array_equal(dark, expected), dark.astype(int)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a video\n" * 50, np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes()],
    ids=["empty", "text", "random-bytes"],
)
@pytest.mark.parametrize("extension", ["mp4", "avi", "webm"])
def test_garbage_bytes_raise_video_decode_error(tmp_path: Path, content: bytes, extension: str) -> None:
    path = tmp_path / f"broken.{extension}"
    path.write_bytes(content)
    with open(path, "rb") as handle, pytest.raises(VideoDecodeError):
        decode_clip(handle, 4, 16, 16)


def _noise(num_frames: int) -> np.ndarray:
    """Frames of noise: every frame takes about as many bytes, so half the bytes is about half the video."""
    return np.random.default_rng(2).integers(0, 256, (num_frames, 48, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize(("container", "codec"), ALL_FORMATS, ids=[f"{c}-{k}" for c, k in ALL_FORMATS])
@pytest.mark.parametrize("content", ["ramp", "noise"])
def test_truncated_file_raises_video_decode_error(tmp_path: Path, container: str, codec: str, content: str) -> None:
    frames = ramp_frames(16, 24, 32) if content == "ramp" else _noise(16)
    whole = encode_video(frames, container, codec)
    assert decode_clip(io.BytesIO(whole), 4, 16, 16).shape == (4, 16, 16, 3)  # the complete file is fine
    path = tmp_path / f"cut.{container}"
    path.write_bytes(whole[: len(whole) // 2])  # an interrupted download
    with open(path, "rb") as handle, pytest.raises(VideoDecodeError):
        decode_clip(handle, 4, 16, 16)


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_truncated_faststart_mp4_raises_video_decode_error(tmp_path: Path, codec: str) -> None:
    """With its index first, half an mp4 still opens and states 16 frames: the missing half must be noticed."""
    path = write_video(tmp_path / "whole.mp4", _noise(16), codec, faststart=True)
    whole = path.read_bytes()
    assert whole[:64].find(b"moov") > 0
    np.testing.assert_array_equal(decode_clip(io.BytesIO(whole), 4, 16, 16).shape, (4, 16, 16, 3))
    with pytest.raises(VideoDecodeError):
        decode_clip(io.BytesIO(whole[: len(whole) // 2]), 4, 16, 16)


def test_audio_only_file_raises_video_decode_error() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as output:
        stream = output.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        for number in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 8000, number * 1024
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        decode_clip(io.BytesIO(buffer.getvalue()), 4, 16, 16)


def test_decode_reads_the_same_file_object_twice() -> None:
    """decode_clip rewinds what it is given: a handle already read from (as fsspec may hand it) still works."""
    data = encode_video(ramp_frames(8, 24, 32), "mkv", "mpeg4")
    handle = io.BytesIO(data)
    handle.read(100)
    first = decode_clip(handle, 4, 16, 16)
    second = decode_clip(handle, 4, 16, 16)
    assert np.array_equal(first, second)


def _decode_every_frame(data: bytes, num_frames: int, height: int, width: int) -> np.ndarray:
    """The reference: decode and convert every frame, keep the centre frame of each of T equal segments of frames."""
    from raydd.data.decode import _to_rgb

    with av.open(io.BytesIO(data)) as container:
        frames = [_to_rgb(frame, height, width) for frame in container.decode(video=0)]
    return np.stack([frames[int(i)] for i in uniform_indices(len(frames), num_frames)])


@pytest.mark.parametrize(("container", "codec"), ALL_FORMATS, ids=[f"{c}-{k}" for c, k in ALL_FORMATS])
@pytest.mark.parametrize(("count", "fps"), [(37, 30), (16, 8), (24, 25)])
def test_time_sampling_picks_the_frames_of_index_sampling_on_constant_frame_rate_files(
    container: str, codec: str, count: int, fps: int
) -> None:
    """Seeking and sampling by timestamps gives exactly the frames a full decode sampled by position gives,
    also where timestamps are rounded (30 and 25 fps in milliseconds) and segment centres fall on frame edges."""
    frames = ramp_frames(count, 24, 32)
    frames[..., 0] = (np.arange(count) * 37 % 256)[:, None, None]  # every frame distinct in red too
    data = encode_video(frames, container, codec, fps=fps)
    for num_frames in (1, 3, 4, 8, 16):
        expected = _decode_every_frame(data, num_frames, 16, 16)
        np.testing.assert_array_equal(decode_clip(io.BytesIO(data), num_frames, 16, 16), expected)


def test_sample_by_time_takes_the_frame_on_screen_at_each_segment_centre() -> None:
    assert sample_by_time([0, 10, 20, 30], 40, 2) == uniform_indices(4, 2).tolist() == [1, 3]
    assert sample_by_time([0, 100, 900], 1000, 2) == [1, 1]  # at 250 and 750 the frame from 100 is still shown
    assert sample_by_time([0, 100, 900], 1000, 5) == [1, 1, 1, 1, 2]


@pytest.mark.parametrize("container", ["h264", "mpegts"], ids=["no-timestamps", "imprecise-seeks"])
def test_streams_the_plan_cannot_serve_are_decoded_whole_and_sampled_by_position(container: str) -> None:
    """A raw H.264 stream has no timestamps to plan on; MPEG-TS seeks land near, not on, a keyframe (decoding
    from there would give frames without their references): every frame is decoded instead."""
    data = encode_video(ramp_frames(16, 24, 32), container, "libx264")
    clip = decode_clip(io.BytesIO(data), 4, 16, 16)
    np.testing.assert_allclose(brightness(clip), [ramp_value(t, 16) for t in (2, 6, 10, 14)], atol=TOLERANCE)
    assert clip.std(axis=(1, 2, 3)).max() < 3  # whole frames, no decoding artefacts


# Shown at irregular times over 2 s, with holes: 15 frames where 24 fps would need 48.
IRREGULAR_MS = [0, 42, 83, 125, 500, 542, 583, 1000, 1042, 1500, 1542, 1583, 1625, 1917, 1958]


@pytest.mark.parametrize(
    ("container", "codec"), [("mkv", "mpeg4"), ("webm", "libvpx-vp9"), ("mp4", "libx264"), ("mkv", "ffv1")]
)
def test_variable_frame_rate_video_is_sampled_by_time(container: str, codec: str) -> None:
    count = len(IRREGULAR_MS)
    data = encode_timed_video(ramp_frames(count, 24, 32), IRREGULAR_MS, container, codec, fps=24)
    with av.open(io.BytesIO(data)) as opened:
        stream = opened.streams.video[0]
        assert len(list(opened.decode(stream))) == count < 24 * 2  # fewer than 2 s at 24 fps would hold
    clip = decode_clip(io.BytesIO(data), 4, 16, 16)
    # Centres of 4 segments of [0, 2000) ms: 250, 750, 1250, 1750 -> the frames on screen then (shown since 125,
    # 583, 1042 and 1625 ms): frames 3, 6, 8, 12. Sampling by position would take frames 1, 5, 9, 13.
    np.testing.assert_allclose(brightness(clip), [ramp_value(t, count) for t in (3, 6, 8, 12)], atol=TOLERANCE)
