"""The built-in dataset: deterministic, and its two class groups differ only in appearance or only in motion."""

from __future__ import annotations

import numpy as np

from raydd.data.builtin import generate_clip
from raydd.data.specs import get_spec

SPEC = get_spec("builtin")
N_STATIC = len(SPEC.static_classes)


def _clips(label: int, n: int = 40) -> np.ndarray:
    return np.stack([generate_clip(SPEC, label, "train", i) for i in range(n)]).astype(np.float32)


def test_clips_are_deterministic_and_shaped() -> None:
    first = generate_clip(SPEC, 3, "train", 7)
    assert first.shape == SPEC.clip_shape and first.dtype == np.uint8
    assert np.array_equal(first, generate_clip(SPEC, 3, "train", 7))
    assert not np.array_equal(first, generate_clip(SPEC, 3, "train", 8))
    assert not np.array_equal(first, generate_clip(SPEC, 3, "test", 7))


def _colour_signature(clips: np.ndarray) -> np.ndarray:
    """Mean colour of the brightest pixels of each single frame: appearance, blind to motion."""
    frames = clips.reshape(-1, SPEC.height * SPEC.width, 3)
    brightness = frames.sum(-1)
    top = np.argsort(brightness, axis=1)[:, -20:]
    return np.take_along_axis(frames, top[..., None], axis=1).mean(1)


def _motion(clips: np.ndarray) -> np.ndarray:
    """Mean displacement (dy, dx) between consecutive frames, from phase correlation on a torus."""
    gray = clips.mean(-1)
    gray -= np.median(gray, axis=1, keepdims=True)  # remove the still background: only the moving sprite is left
    spectra = np.fft.fft2(gray)
    cross = spectra[:, 1:] * np.conj(spectra[:, :-1])
    correlation = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real.mean(1)
    peaks = correlation.reshape(len(clips), -1).argmax(1)
    dy, dx = np.unravel_index(peaks, (SPEC.height, SPEC.width))
    wrap = lambda d, n: np.where(d > n // 2, d - n, d)  # noqa: E731
    return np.stack([wrap(dy, SPEC.height), wrap(dx, SPEC.width)], 1)


def test_static_classes_differ_in_appearance_dynamic_classes_do_not() -> None:
    static = [_colour_signature(_clips(label)).mean(0) for label in range(N_STATIC)]
    dynamic = [_colour_signature(_clips(label)).mean(0) for label in range(N_STATIC, len(SPEC.classes))]
    static_gap = min(np.abs(a - b).max() for i, a in enumerate(static) for b in static[i + 1 :])
    dynamic_gap = max(np.abs(a - b).max() for i, a in enumerate(dynamic) for b in dynamic[i + 1 :])
    assert static_gap > 40, static_gap  # distinct colours (0-255 scale)
    assert dynamic_gap < 10, dynamic_gap  # one shared appearance


def test_dynamic_classes_differ_in_motion_static_classes_do_not() -> None:
    dynamic_motion = [tuple(np.median(_motion(_clips(label)), 0)) for label in range(N_STATIC, len(SPEC.classes))]
    assert len(set(dynamic_motion)) == len(dynamic_motion), dynamic_motion  # each its own direction or speed
    static_motion = [np.unique(_motion(_clips(label, 60)), axis=0).shape[0] for label in range(N_STATIC)]
    assert min(static_motion) >= 3, static_motion  # every static class shows many motions


def _centroids(clips: np.ndarray, frame: int) -> np.ndarray:
    """(y, x) centre of the bright sprite in ``frame`` of each clip (the background is darker than any sprite)."""
    bright = clips[:, frame].mean(-1) > 0.4 * 255
    yy, xx = np.mgrid[: SPEC.height, : SPEC.width]
    return np.stack([(yy * bright).sum((1, 2)) / bright.sum((1, 2)), (xx * bright).sum((1, 2)) / bright.sum((1, 2))], 1)


def test_every_dynamic_class_has_the_same_middle_frame_and_differs_later() -> None:
    """A frame-only model tested on the middle frame must guess among the dynamic classes; a video model need not."""
    middle = [_centroids(_clips(label), SPEC.num_frames // 2).mean(0) for label in range(N_STATIC, len(SPEC.classes))]
    centre = np.array([SPEC.height, SPEC.width]) / 2
    assert max(np.abs(m - centre).max() for m in middle) < 3, middle
    right, left = (_centroids(_clips(N_STATIC + k), SPEC.num_frames - 1).mean(0) for k in (0, 1))
    assert right[1] - left[1] > 8, (right, left)  # move-right ends right of move-left
