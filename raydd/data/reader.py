"""Reading prepared datasets into torch, trusting only the manifest.

Frames stay uint8 and are never decoded per clip: each shard is memory-mapped (or fetched once from
an object store) and viewed as an (N, T, H, W, C) array; a batch is one gather per shard.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from raydd.data.shards import DATASET_KIND, read_clip_shard
from raydd.data.specs import DatasetSpec
from raydd.errors import RayddError
from raydd.storage import Location, Manifest, ManifestNotFound, read_manifest, resolve, sha256, size


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
    try:
        manifest = read_manifest(location)
    except ManifestNotFound:
        raise RayddError(
            f"no prepared dataset at {location}: run `python -m raydd.prepare --dataset NAME --store STORE` "
            "(it writes STORE/datasets/NAME)"
        ) from None
    if manifest.kind != DATASET_KIND:
        raise RayddError(f"{location} holds a {manifest.kind!r}, not a prepared video dataset")
    return PreparedDataset(location, manifest)


class PreparedVideos(Dataset):
    """One split of a prepared dataset as a torch dataset of ``(frames uint8 (T, H, W, C), label)``.

    ``verify=True`` checks every shard's SHA-256 against the manifest; the default checks sizes only.
    """

    def __init__(self, dataset: PreparedDataset, split: str, *, verify: bool = False) -> None:
        records = dataset.manifest.group(split)
        if not records:
            raise RayddError(f"{dataset.location} has no {split!r} split: splits are train and test")
        self.dataset = dataset
        self.split = split
        self._frames: list[np.ndarray] = []
        labels = []
        for record in records:
            location = dataset.location.child(record.name)
            actual = size(location)
            if actual != record.bytes or (verify and sha256(location) != record.sha256):
                raise RayddError(
                    f"shard {location} does not match its manifest ({actual} bytes, expected {record.bytes}): "
                    f"it was modified or truncated; re-run `python -m raydd.prepare --overwrite`"
                )
            shard = read_clip_shard(location)
            self._frames.append(shard.frames_NTHWC)
            labels.append(shard.labels)
        self._starts = np.cumsum([0] + [len(f) for f in self._frames])
        self.labels = torch.from_numpy(np.concatenate(labels).astype(np.int64))

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"clip index out of range for {len(self)} clips")
        shard = np.searchsorted(self._starts, indices, side="right") - 1
        return shard, indices - self._starts[shard]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        shard, row = self._locate(np.asarray([index]))
        return torch.from_numpy(np.array(self._frames[shard[0]][row[0]])), int(self.labels[index])

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(frames uint8 (N, T, H, W, C), labels int64 (N,))`` for ``indices``, one gather per shard."""
        indices = np.asarray(indices, dtype=np.int64)
        shards, rows = self._locate(indices)
        out = np.empty((len(indices), *self.clip_shape), np.uint8)
        for position, (shard, row) in enumerate(zip(shards.tolist(), rows.tolist())):
            out[position] = self._frames[shard][row]  # one copy straight from the mapped file
        return torch.from_numpy(out), self.labels[torch.from_numpy(indices)]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched fetch for ``torch.utils.data.DataLoader`` (one gather instead of one copy per clip)."""
        frames, labels = self.batch(indices)
        return list(zip(frames, labels.tolist()))

    @property
    def clip_shape(self) -> tuple[int, ...]:
        return tuple(self.dataset.manifest.metadata["clip_shape"])
