"""Whether a worker keeps its real clips resident on its GPU, as uint8.

A worker that matches only its own classes (``--worker-split classes``) needs only their clips; when they fit in
a set fraction of the device's free memory it copies them there once, and every iteration then samples
by a gather on the device. The rest of the device memory is for the matching network's activations.
On the CPU nothing is copied: the memory-mapped shards already are the resident copy, shared between
the processes of a node and not counted as any process's private memory.
"""

from __future__ import annotations

import math

import torch

RESIDENT_FRACTION = 0.5  # of the device's free memory at the start; the rest is for activations


def resident_bytes(clips: int, clip_shape: tuple[int, ...]) -> int:
    """Bytes of ``clips`` clips of ``clip_shape`` (T, H, W, C) as uint8 on a device."""
    return clips * math.prod(clip_shape)


def fits_on_device(nbytes: int, free_bytes: int, *, fraction: float = RESIDENT_FRACTION) -> bool:
    """Whether ``nbytes`` of clips may be kept on a device with ``free_bytes`` free (``--plan`` asks this
    with the node type's GPU memory; a worker asks it with :func:`free_device_bytes`)."""
    return nbytes <= fraction * free_bytes


def free_device_bytes(device: torch.device) -> int | None:
    """Free memory of an accelerator; ``None`` on the CPU (nothing is ever copied there)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def should_keep_resident(clips: int, clip_shape: tuple[int, ...], device: torch.device) -> bool:
    free = free_device_bytes(device)
    return free is not None and fits_on_device(resident_bytes(clips, clip_shape), free)
