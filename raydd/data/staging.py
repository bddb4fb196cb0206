"""Clips of a prepared split on their way to a device, the one path distillation and evaluation share.

A batch is gathered on the host in ascending row order (shards read front to back, each byte copied once by
:meth:`~raydd.data.reader.PreparedVideos.gather_into`) into a staging buffer, pinned when the device is CUDA, so
that the copy to the device is asynchronous (a copy from pageable memory without ``non_blocking`` makes the host
wait for the whole stream); the batch is put back in the asked order by a gather on the device. On the CPU the
buffer is plain memory and the reordering gather is the one copy out of it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from raydd.data.reader import PreparedVideos
from raydd.devices import to_device


class Staging:
    """Two host buffers for clips on their way to the device. Pinned (``pin``, for CUDA) they are made once and
    grown, never made per batch (pinning costs page locking), and a buffer is reused only after the asynchronous
    copy out of it has finished (a CUDA event per buffer). Unpinned, each batch gets a fresh one."""

    def __init__(self, *, pin: bool) -> None:
        self.pin = pin
        self._buffers: list[Tensor | None] = [None, None]
        self._sent: list[object | None] = [None, None]

    def get(self, buffer: int, shape: tuple[int, ...]) -> Tensor:
        event = self._sent[buffer]
        if event is not None:
            event.synchronize()  # type: ignore[attr-defined]
            self._sent[buffer] = None
        if not self.pin:  # plain memory is cheap to make: held by nobody between batches
            return torch.empty(shape, dtype=torch.uint8)
        held, size = self._buffers[buffer], math.prod(shape)
        if held is None or held.numel() < size:
            held = torch.empty(size, dtype=torch.uint8, pin_memory=self.pin)
            self._buffers[buffer] = held
        return held[:size].view(shape)

    def sent(self, buffer: int, device: torch.device) -> None:
        if device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
            self._sent[buffer] = event


class StagedGather:
    """:meth:`stage` (the host half: may run on a background thread) and :meth:`send` (the device half) of a batch
    of clips of ``videos``; ``pin``: stage in pinned memory (default: when ``device`` is CUDA)."""

    def __init__(self, videos: PreparedVideos, device: torch.device, *, pin: bool | None = None) -> None:
        self.videos, self.device = videos, device
        self.staging = Staging(pin=device.type == "cuda" if pin is None else pin)

    def stage(self, rows: np.ndarray, buffer: int, frames: np.ndarray | None = None) -> tuple[Tensor, np.ndarray]:
        """Clips ``rows`` (stage 1: only frame ``frames[i]`` of each) in ascending row order in staging buffer
        ``buffer`` (0 or 1), uint8 (N, T, H, W, C) ((N, 1, H, W, C) with ``frames``), and the permutation that sorted
        them."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        clip_shape = self.videos.clip_shape
        shape = (len(rows), 1 if frames is not None else clip_shape[0], *clip_shape[1:])
        out = self.staging.get(buffer, shape)
        picked = None if frames is None else np.asarray(frames)[order]
        return self.videos.gather_into(rows[order], out, picked), order

    def send(self, staged: tuple[Tensor, np.ndarray], buffer: int) -> Tensor:
        """A staged batch on the device in the asked order: the copy is asynchronous from pinned memory, and the
        reordering a gather on the device."""
        frames_NTHWC, order = staged
        on_device = frames_NTHWC.to(self.device, non_blocking=True)
        self.staging.sent(buffer, self.device)
        return on_device[to_device(torch.from_numpy(np.argsort(order)), self.device)]
