"""Real training clips as matching data: uint8 until a batch is on the device, then standardised.

``frames=True`` is stage 1's view (one random frame per clip, (N, C, H, W)); otherwise whole clips
(N, C, T, H, W). ``indices`` restricts the data to a subset of the split (a sweep holds out its
validation clips this way). Batches are drawn from an explicit ``torch.Generator`` so that every matching sample
is reproducible from its seed, whichever worker draws it.

Drawing and loading are separate steps: a :class:`RealDraw` (which clips, which frame of each) costs a
few bytes a clip, so a method can draw a whole sample and then load, standardise and embed it one chunk
at a time, never holding the whole sample as floats.

A worker may keep clips *resident* on its device (:meth:`RealData.keep_resident`): they are copied there
once as uint8, and loading them is then a gather on the device that copies no clip bytes from the host.
Whether it does (:func:`should_keep_resident`): a worker that matches only its own classes (``--worker-split classes``)
needs only their clips; when they fit in a set fraction of the device's free memory it copies them there once. The
rest of the device memory is for the matching network's activations. On the CPU nothing is copied: the
memory-mapped shards already are the resident copy, shared between the processes of a node and not counted as any
process's private memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from raydd.data.reader import PreparedVideos, Standardiser
from raydd.data.staging import StagedGather
from raydd.devices import to_device
from raydd.errors import RayddError


@dataclasses.dataclass(frozen=True)
class RealDraw:
    """Drawn clips: rows of the split, and (stage 1) the frame picked from each."""

    rows: Tensor  # int64 (N,), on the CPU
    frames: Tensor | None = None  # int64 (N,): stage 1's frame of each clip

    def __len__(self) -> int:
        return len(self.rows)

    def part(self, start: int, stop: int) -> RealDraw:
        return RealDraw(self.rows[start:stop], None if self.frames is None else self.frames[start:stop])

    def chunks(self, size: int) -> list[RealDraw]:
        return [self.part(start, start + size) for start in range(0, len(self), size)]


class RealData:
    def __init__(
        self,
        videos: PreparedVideos,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        *,
        frames: bool,
        indices: np.ndarray | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        """``pin_memory``: stage host batches in pinned memory (default: when ``device`` is CUDA)."""
        self.videos = videos
        self.device = device
        self.frames = frames
        self.num_classes = len(videos.dataset.classes)
        self.indices = (
            torch.arange(len(videos)) if indices is None else torch.as_tensor(np.array(indices, dtype=np.int64))
        )
        labels = videos.labels[self.indices]
        self.class_indices = [self.indices[torch.nonzero(labels == c).flatten()] for c in range(self.num_classes)]
        empty = [videos.dataset.classes[c] for c, idx in enumerate(self.class_indices) if len(idx) == 0]
        if empty:
            raise RayddError(
                f"class {empty[0]!r} has no training clips in {videos.dataset.location}: re-prepare the dataset with "
                "clips of every class"
            )
        self._standardise = Standardiser(mean, std, device)
        self._resident: Tensor | None = None  # uint8 (M, T, H, W, C) on the device
        self._slot: Tensor | None = None  # int64 (len(videos),) on the CPU: a row's position in _resident, -1 if absent
        self._gather = StagedGather(videos, device, pin=pin_memory)

    def pixel_range(self) -> tuple[Tensor, Tensor]:
        """Per channel, the standardised values of pixel 0 and pixel 255: the range real clips span."""
        return self._standardise.pixel_range()

    @property
    def clip_frames(self) -> int:
        return int(self.videos.clip_shape[0])

    def _with_frames(self, rows: Tensor, generator: torch.Generator) -> RealDraw:
        frames = torch.randint(self.clip_frames, (len(rows),), generator=generator) if self.frames else None
        return RealDraw(rows, frames)

    def draw_per_class(self, n: int, generator: torch.Generator) -> RealDraw:
        """``n`` clips of every class, class-major (clip ``i`` is of class ``i // n``). Without
        replacement where a class has at least ``n`` clips."""
        chosen = []
        for idx in self.class_indices:
            if len(idx) >= n:
                chosen.append(idx[torch.randperm(len(idx), generator=generator)[:n]])
            else:
                chosen.append(idx[torch.randint(len(idx), (n,), generator=generator)])
        return self._with_frames(torch.cat(chosen), generator)

    def draw_random(self, n: int, generator: torch.Generator) -> RealDraw:
        """``n`` clips drawn uniformly from the split."""
        return self._with_frames(self.indices[torch.randperm(len(self.indices), generator=generator)[:n]], generator)

    def load(self, draw: RealDraw) -> Tensor:
        """The drawn clips on the device, standardised: (N, C, T, H, W), or (N, C, H, W) for frames."""
        if self._resident_slots(draw) is not None:
            return self._finish(draw, self._resident_frames(draw))
        return self._finish(draw, self._transfer(self._stage(draw, 0), 0, draw))

    def stream(self, draws: Sequence[RealDraw]) -> Iterator[Tensor]:
        """:meth:`load` of each draw in turn; while the caller computes on one, a background thread gathers
        the next into the other of two staging buffers (pinned when the device is CUDA), so its transfer
        starts as soon as it is asked for. The draws are made before, so the sampling order is unchanged."""
        if not draws:
            return
        if all(self._resident_slots(draw) is not None for draw in draws):
            for draw in draws:
                yield self._finish(draw, self._resident_frames(draw))
            return
        for draw, (frames_NTHWC, order, buffer) in zip(draws, self.staged(draws), strict=True):
            yield self._finish(draw, self._transfer((frames_NTHWC, order), buffer, draw))

    def staged(self, draws: Sequence[RealDraw]) -> Iterator[tuple[Tensor, np.ndarray, int]]:
        """The host half of :meth:`stream`: each draw's clips gathered into a staging buffer in ascending row
        order, with the permutation that sorted them and the buffer's number; the next draw is gathered on a
        background thread while the caller uses this one (a buffer is rewritten once the caller asks for the
        draw after next)."""
        with ThreadPoolExecutor(1, thread_name_prefix="raydd-gather") as pool:
            pending = pool.submit(self._stage, draws[0], 0) if draws else None
            for k in range(len(draws)):
                assert pending is not None
                frames_NTHWC, order = pending.result()
                if k + 1 < len(draws):
                    pending = pool.submit(self._stage, draws[k + 1], (k + 1) % 2)
                yield frames_NTHWC, order, k % 2

    def _resident_slots(self, draw: RealDraw) -> Tensor | None:
        if self._slot is None or self._resident is None:
            return None
        slots = self._slot[draw.rows]
        return slots if bool((slots >= 0).all()) else None

    def _resident_frames(self, draw: RealDraw) -> Tensor:
        """uint8 (N, T, H, W, C) (stage 1: (N, 1, H, W, C)) in drawn order: one gather on the device."""
        slots = self._resident_slots(draw)
        assert slots is not None and self._resident is not None
        device = self._resident.device
        if draw.frames is None:
            return self._resident[to_device(slots, device)]
        frames_MT1HWC = self._resident.view(-1, 1, *self._resident.shape[2:])
        return frames_MT1HWC[to_device(slots * self.clip_frames + draw.frames, device)]

    def _stage(self, draw: RealDraw, buffer: int) -> tuple[Tensor, np.ndarray]:
        """The drawn clips (stage 1: frames) in ascending row order in staging buffer ``buffer``, and the
        permutation that sorted them (:class:`~raydd.data.staging.StagedGather`)."""
        return self._gather.stage(draw.rows.numpy(), buffer, None if draw.frames is None else draw.frames.numpy())

    def _transfer(self, staged: tuple[Tensor, np.ndarray], buffer: int, draw: RealDraw) -> Tensor:
        """On the device, in drawn order (:meth:`~raydd.data.staging.StagedGather.send`)."""
        return self._gather.send(staged, buffer)

    def _finish(self, draw: RealDraw, frames_NTHWC: Tensor) -> Tensor:
        videos = self._standardise(frames_NTHWC, self.device)  # in place: raydd.data.reader
        return videos[:, :, 0] if draw.frames is not None else videos

    def per_class(self, n: int, generator: torch.Generator) -> Tensor:
        """The loaded :meth:`draw_per_class`: (num_classes * n, ...)."""
        return self.load(self.draw_per_class(n, generator))

    def random(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` clips drawn uniformly from the split and their labels."""
        draw = self.draw_random(n, generator)
        return self.load(draw), self.labels_of(draw)

    def labels_of(self, draw: RealDraw) -> Tensor:
        return to_device(self.videos.labels[draw.rows], self.device)

    def rows_of(self, classes: range) -> Tensor:
        """The split's rows of ``classes``, ascending."""
        return torch.sort(torch.cat([self.class_indices[c] for c in classes])).values

    def keep_resident(self, rows: Tensor, *, chunk: int = 256) -> None:
        """Copy ``rows`` to the device once, as uint8, in chunks (never the whole set in host memory)."""
        rows = torch.sort(rows).values
        resident = torch.empty((len(rows), *self.videos.clip_shape), dtype=torch.uint8, device=self.device)
        for start in range(0, len(rows), chunk):
            frames_NTHWC, _ = self.videos.batch(rows[start : start + chunk].numpy())
            resident[start : start + len(frames_NTHWC)] = frames_NTHWC.to(self.device)
        slot = torch.full((len(self.videos),), -1, dtype=torch.int64)
        slot[rows] = torch.arange(len(rows))
        self._resident, self._slot = resident, slot

    @property
    def resident_clips(self) -> int:
        return 0 if self._resident is None else len(self._resident)


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
