"""The built-in dataset: small synthetic videos generated from a seed, never downloaded.

It mirrors the paper's static and dynamic class groups (Suppl. 9.1) so later stages can measure
whether motion survives distillation:

* **static classes** differ only in appearance: each has its own shape and colour, and moves with a
  motion drawn from the same distribution for every static class, so motion tells nothing;
* **dynamic classes** differ only in motion: all share one appearance (a grey textured square), and
  each moves in its own direction or at its own speed. A frame-only model can tell the static classes
  apart but must guess among the dynamic ones from the middle frame, which has the same distribution in
  every dynamic class.

Every sprite's path is centred on the canvas (its middle frame sits at the centre, give or take a few
pixels of jitter), on a plain grey background. That calibration (README, "The built-in dataset") makes one
clip a class enough to learn from, as on MNIST: with sprites anywhere on a random-colour background, a
network trained on 1 random clip a class memorises position and background and tests at chance (11.7 %),
and no distillation method can be told apart from another at IPC 1.

Every clip is a pure function of (seed, label, split, index), so shards can be generated in parallel.
"""

from __future__ import annotations

import zlib

import numpy as np

from raydd.data.specs import DatasetSpec

# (dy, dx) in pixels per frame at 32 px; scaled with the canvas. Paths wrap around the canvas's edges.
_DYNAMIC_MOTIONS: tuple[tuple[float, float], ...] = ((0, 1.5), (0, -1.5), (-1.5, 0), (1.5, 0), (0, 3.5))
_STATIC_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.9, 0.15, 0.15),
    (0.15, 0.8, 0.2),
    (0.2, 0.3, 0.95),
    (0.9, 0.85, 0.1),
    (0.1, 0.85, 0.9),
)
_STATIC_SHAPES = ("disk", "square", "ring", "cross", "bar")
# The calibration (at 32 px; scaled with the canvas): how far a path's middle frame strays from the
# centre, and the background's grey level (a plain grey plus pixel noise).
CENTRE_JITTER = 5.0
BACKGROUND_GREY = (0.1, 0.2)


def _shape_mask(shape: str, size: int) -> np.ndarray:
    """A (size, size) float mask of ``shape``, centred."""
    yy, xx = np.mgrid[:size, :size] + 0.5 - size / 2
    radius = np.hypot(yy, xx)
    half = size / 2
    masks = {
        "disk": radius <= half,
        "square": (np.abs(yy) <= half * 0.8) & (np.abs(xx) <= half * 0.8),
        "ring": (radius <= half) & (radius >= half * 0.55),
        "cross": (np.abs(yy) <= half * 0.3) | (np.abs(xx) <= half * 0.3),
        "bar": (np.abs(yy) <= half * 0.35) & (np.abs(xx) <= half),
    }
    return masks[shape].astype(np.float32)


def _seed_for(seed: int, label: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, label, zlib.crc32(split.encode()), index])


def generate_clip(spec: DatasetSpec, label: int, split: str, index: int) -> np.ndarray:
    """One (T, H, W, 3) uint8 clip of class ``label``; deterministic in (spec.seed, label, split, index)."""
    rng = _seed_for(spec.seed, label, split, index)
    frames, height, width = spec.num_frames, spec.height, spec.width
    n_static = len(spec.static_classes)
    scale = min(height, width) / 32
    sprite_size = max(4, round(10 * scale))

    if label < n_static:
        mask = _shape_mask(_STATIC_SHAPES[label % len(_STATIC_SHAPES)], sprite_size)
        colour = np.clip(np.array(_STATIC_COLOURS[label % len(_STATIC_COLOURS)]) + rng.normal(0, 0.05, 3), 0, 1)
        texture = np.ones((sprite_size, sprite_size, 1), np.float32)
        motion = _DYNAMIC_MOTIONS[rng.integers(len(_DYNAMIC_MOTIONS))]
    else:
        mask = _shape_mask("square", sprite_size)
        colour = np.full(3, rng.uniform(0.55, 0.8))
        texture = (0.75 + 0.25 * (np.add.outer(np.arange(sprite_size), np.arange(sprite_size)) // 2 % 2))[..., None]
        motion = _DYNAMIC_MOTIONS[(label - n_static) % len(_DYNAMIC_MOTIONS)]
    sprite = mask[..., None] * texture * colour  # (s, s, 3)

    canvas_mask = np.zeros((height, width, 1), np.float32)
    canvas_sprite = np.zeros((height, width, 3), np.float32)
    canvas_mask[:sprite_size, :sprite_size, 0] = mask
    canvas_sprite[:sprite_size, :sprite_size] = sprite

    background = np.full(3, rng.uniform(*BACKGROUND_GREY), np.float32) + rng.normal(0, 0.04, (height, width, 3)).astype(
        np.float32
    )
    jitter = CENTRE_JITTER * scale
    middle = (frames - 1) / 2
    start_y = (height - sprite_size) / 2 - motion[0] * scale * middle + rng.uniform(-jitter, jitter)
    start_x = (width - sprite_size) / 2 - motion[1] * scale * middle + rng.uniform(-jitter, jitter)
    video = np.empty((frames, height, width, 3), np.float32)
    for t in range(frames):
        shift = (round(start_y + motion[0] * scale * t) % height, round(start_x + motion[1] * scale * t) % width)
        m = np.roll(canvas_mask, shift, axis=(0, 1))
        s = np.roll(canvas_sprite, shift, axis=(0, 1))
        video[t] = background * (1 - m) + s
    video += rng.normal(0, 0.02, video.shape).astype(np.float32)
    return (np.clip(video, 0, 1) * 255 + 0.5).astype(np.uint8)


def parse_builtin_source(source: str) -> tuple[int, str, int]:
    """``builtin:<label>:<split>:<index>`` -> (label, split, index)."""
    _, label, split, index = source.split(":")
    return int(label), split, int(index)
