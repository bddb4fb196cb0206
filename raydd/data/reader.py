"""Reading prepared datasets into torch, trusting only the manifest.

Frames stay uint8 and are never decoded per clip: each shard is memory-mapped, in place when the store
is local and from the node's cache otherwise (:mod:`raydd.data.cache`), and viewed as an (N, T, H, W, C)
array. A process holds per clip only its label (and, once asked, its class position); the frames stay in
the page cache, shared by the node's processes, and a batch copies just its own clips.

:class:`Standardiser` is the one standardisation of real clips: uint8 frames as stored, (N, T, H, W, C), become
model input, float (N, C, T, H, W), ``(x - 255 * mean) / (255 * std)`` per channel with the dataset's mean/std.
Evaluation and experts (:mod:`raydd.evaluation.sources`) and distillation (:mod:`raydd.distill.real`) both
standardise through it, so a clip means the same to every network. It works in place on the float copy it makes
on the device: out of place, a chunk was held as three float copies at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from raydd.data.cache import cached, local_shard, local_shards
from raydd.data.shards import DATASET_KIND, map_clip_frames, read_label_column
from raydd.data.specs import DatasetSpec
from raydd.devices import to_device
from raydd.errors import RayddError
from raydd.storage import Location, Manifest, ShardRecord, open_manifest, resolve


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
    """A complete prepared dataset: where it is and its manifest."""

    location: Location
    manifest: Manifest

    @property
    def spec(self) -> DatasetSpec:
        return DatasetSpec.from_dict(self.manifest.metadata["spec"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest.metadata["classes"])

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of the training frames in [0, 1] (for input standardisation)."""
        return tuple(self.manifest.metadata["train_mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.manifest.metadata["train_std"])

    def split(self, name: str, *, verify: bool = False) -> PreparedVideos:
        return PreparedVideos(self, name, verify=verify)


def open_prepared(uri: str) -> PreparedDataset:
    """Open the prepared dataset at ``uri`` (e.g. ``STORE/datasets/builtin``)."""
    location = resolve(uri)
    make_it = "python -m raydd.prepare --dataset NAME --store STORE"
    manifest = open_manifest(location, DATASET_KIND, what="prepared dataset", make_it=make_it)
    return PreparedDataset(location, manifest)


def _records(dataset: PreparedDataset, split: str) -> tuple[ShardRecord, ...]:
    records = dataset.manifest.group(split)
    if not records:
        raise RayddError(f"{dataset.location} has no {split!r} split: splits are train and test")
    return records


def read_labels(dataset: PreparedDataset, split: str) -> np.ndarray:
    """The labels (int64, in row order) of a split, reading only the shards' label column: a few KB a
    shard, from the local store, the node's cache when it holds the shard, or ranged reads of the store.
    For drivers (the tune driver's validation split) that need labels but no frames."""
    labels = []
    for record in _records(dataset, split):
        entry = None if dataset.location.is_local else cached(record)
        labels.append(read_label_column(resolve(str(entry)) if entry else dataset.location.child(record.name)))
    return np.concatenate(labels).astype(np.int64)


def class_counts(dataset: PreparedDataset, split: str) -> np.ndarray:
    """Clips of every class in a split (int64, class order), from the manifest alone."""
    counts = dataset.manifest.metadata["class_counts"][split]
    return np.asarray([counts[name] for name in dataset.classes], dtype=np.int64)


class PreparedVideos(Dataset):
    """One split of a prepared dataset as a torch dataset of ``(frames uint8 (T, H, W, C), label)``.

    ``verify=True`` checks every shard's SHA-256 against the manifest; the default checks sizes only
    (a remote shard is always checked when the node's cache is filled).
    """

    def __init__(self, dataset: PreparedDataset, split: str, *, verify: bool = False) -> None:
        records = _records(dataset, split)
        self.dataset = dataset
        self.split = split
        locations = [dataset.location.child(record.name) for record in records]
        paths = local_shards(locations, records, verify=verify)
        self._frames: list[np.ndarray] = []
        labels = []
        for path, location, record in zip(paths, locations, records):
            try:
                frames_NTHWC, shard_labels = map_clip_frames(path, location)
            except RayddError:
                if location.is_local:
                    raise
                # a cache entry damaged in place (right size): re-hashing it fetches it again
                frames_NTHWC, shard_labels = map_clip_frames(local_shard(location, record, verify=True), location)
            self._frames.append(frames_NTHWC)
            labels.append(shard_labels)
        self._starts = np.cumsum([0] + [len(f) for f in self._frames])
        self.labels = torch.from_numpy(np.concatenate(labels).astype(np.int64))
        self._class_order: np.ndarray | None = None
        self._class_starts: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __reduce__(self) -> tuple[type, tuple[PreparedDataset, str]]:
        """Pickled as where it is, not as its frames: a DataLoader worker or a Ray task maps the shards
        again from its own node's cache."""
        return PreparedVideos, (self.dataset, self.split)

    def _locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"clip index out of range for {len(self)} clips")
        shard = np.searchsorted(self._starts, indices, side="right") - 1
        return shard, indices - self._starts[shard]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        shard, row = self._locate(np.asarray([index]))
        return torch.from_numpy(np.array(self._frames[shard[0]][row[0]])), int(self.labels[index])

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(frames uint8 (N, T, H, W, C), labels int64 (N,))`` for ``indices``, in their order: one
        vectorised gather per shard, straight from the mapped file."""
        indices = np.asarray(indices, dtype=np.int64)
        shards, rows = self._locate(indices)
        out = np.empty((len(indices), *self.clip_shape), np.uint8)
        for shard in np.unique(shards).tolist():
            mine = shards == shard
            out[mine] = self._frames[shard][rows[mine]]
        return torch.from_numpy(out), self.labels[torch.from_numpy(indices)]

    def gather_into(self, rows: np.ndarray, out: Tensor, frames: np.ndarray | None = None) -> Tensor:
        """Copy clips ``rows`` (ascending) into ``out[: len(rows)]``, uint8 (N, T, H, W, C), each byte once.

        One ``np.take`` per shard writes a contiguous run of ``out`` (the rows of a shard are contiguous once
        sorted), so a pinned buffer receives the clips with no intermediate copy. ``frames`` (int64 (N,)) takes
        only that frame of each clip (out: (N, 1, H, W, C)): stage 1 reads an eighth of the bytes at T = 8."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) > 1 and bool((np.diff(rows) < 0).any()):
            raise ValueError("gather_into takes rows in ascending order")
        shards, local = self._locate(rows)
        target = out.numpy()[: len(rows)]
        bounds = np.searchsorted(shards, np.arange(len(self._frames) + 1))
        for shard in np.unique(shards).tolist():
            start, stop = int(bounds[shard]), int(bounds[shard + 1])
            source = self._frames[shard]
            picked = local[start:stop]
            if frames is not None:
                clip_frames = source.shape[1]
                source = source.reshape(-1, 1, *source.shape[2:])  # a view: (N * T, 1, H, W, C)
                picked = picked * clip_frames + np.asarray(frames[start:stop], dtype=np.int64)
            np.take(source, picked, axis=0, out=target[start:stop], mode="clip")  # "raise" buffers: a second copy
        return out[: len(rows)]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched fetch for ``torch.utils.data.DataLoader`` (one gather instead of one copy per clip)."""
        frames, labels = self.batch(indices)
        return list(zip(frames, labels.tolist()))

    @property
    def clip_shape(self) -> tuple[int, ...]:
        return tuple(self.dataset.manifest.metadata["clip_shape"])

    def _by_class(self) -> tuple[np.ndarray, np.ndarray]:
        if self._class_order is None:
            labels = self.labels.numpy()
            self._class_order = np.argsort(labels, kind="stable")
            counts = np.bincount(labels, minlength=len(self.dataset.classes))
            self._class_starts = np.concatenate([[0], np.cumsum(counts)])
        return self._class_order, self._class_starts

    def class_rows(self, c: int) -> np.ndarray:
        """Rows of class ``c`` in this split (int64, ascending), from the label column alone: sampling by
        class touches the frames of the clips it draws and no others."""
        order, starts = self._by_class()
        if not 0 <= c < len(starts) - 1:
            raise IndexError(f"class {c} out of range for {len(starts) - 1} classes")
        return order[starts[c] : starts[c + 1]]

    @property
    def rows_by_class(self) -> tuple[np.ndarray, ...]:
        """:meth:`class_rows` of every class, in class order."""
        return tuple(self.class_rows(c) for c in range(len(self.dataset.classes)))


class Standardiser:
    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | None = None) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1, 1) * 255
        self._copies: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __call__(self, frames_NTHWC: Tensor, device: torch.device) -> Tensor:
        """uint8 (N, T, H, W, C), anywhere -> standardised float (N, C, T, H, W) on ``device``."""
        if frames_NTHWC.dtype != torch.uint8:  # .float() of a float tensor is the tensor itself: never edit it
            raise TypeError(f"expected uint8 frames, got {frames_NTHWC.dtype}")
        videos = frames_NTHWC.to(device, non_blocking=True).permute(0, 4, 1, 2, 3).float()
        mean, std = self._on(device)
        return videos.sub_(mean).div_(std)

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The mean and std on ``device``, copied there once: a copy per batch would be a blocking one on CUDA."""
        if device not in self._copies:
            self._copies[device] = (to_device(self.mean, device), to_device(self.std, device))
        return self._copies[device]

    def pixel_range(self) -> tuple[Tensor, Tensor]:
        """Per channel, the standardised values of pixel 0 and pixel 255 (on the CPU): the range real clips span."""
        low, high = (0 - self.mean) / self.std, (255 - self.mean) / self.std
        return low.flatten().cpu(), high.flatten().cpu()
