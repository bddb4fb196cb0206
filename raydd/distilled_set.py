"""The distilled-set artifact: synthetic training videos, their labels, and where they came from.

A distilled set is a folder with one Arrow shard (``videos``: float32 (C, T, H, W) in the model-input
space, i.e. standardised with the real dataset's mean/std; ``label``) and a manifest (kind
``raydd.distilled/1``) whose metadata names the classes, the clip shape, the prepared dataset it was
distilled from, the method, and the storage size. :func:`load_distilled` is the one call a user needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import TensorDataset

from raydd.data.shards import tensor_array, tensor_numpy
from raydd.errors import RayddError
from raydd.storage import Manifest, ManifestNotFound, ShardRecord, atomic_writer, read_bytes, read_manifest, resolve, sha256, size, write_manifest

DISTILLED_KIND = "raydd.distilled/1"
SHARD_NAME = "videos.arrow"


@dataclasses.dataclass(frozen=True)
class DistilledSet:
    videos_NCTHW: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    clip_shape: tuple[int, int, int, int]  # (T, H, W, C) of the real data it stands for
    dataset_uri: str
    metadata: dict[str, Any]

    def as_torch_dataset(self) -> TensorDataset:
        return TensorDataset(self.videos_NCTHW, self.labels)


def write_distilled(uri: str, videos_NCTHW: torch.Tensor, labels: torch.Tensor, *, classes: tuple[str, ...], dataset_uri: str, method: str, extra: dict[str, Any] | None = None) -> Manifest:
    """Write a distilled set of full videos (shard first, manifest last)."""
    videos = videos_NCTHW.detach().to("cpu", torch.float32).contiguous().numpy()
    n, c, t, h, w = videos.shape
    table = pa.table({"label": pa.array(labels.cpu().numpy().astype(np.int32)), "videos": tensor_array(videos)})
    folder = resolve(uri)
    with atomic_writer(folder.child(SHARD_NAME)) as handle, pa.ipc.new_file(pa.PythonFile(handle, mode="w"), table.schema) as writer:
        writer.write_table(table)
    shard = folder.child(SHARD_NAME)
    metadata = {
        "classes": list(classes),
        "clip_shape": [t, h, w, c],
        "dataset_uri": dataset_uri,
        "method": method,
        "storage_bytes": int(videos.nbytes),
        **(extra or {}),
    }
    manifest = Manifest(kind=DISTILLED_KIND, shards=(ShardRecord(SHARD_NAME, n, size(shard), sha256(shard)),), metadata=metadata)
    write_manifest(folder, manifest)
    return manifest


def load_distilled(uri: str) -> DistilledSet:
    """Load the distilled set at ``uri`` (videos in model-input space, labels, and its metadata)."""
    folder = resolve(uri)
    try:
        manifest = read_manifest(folder)
    except ManifestNotFound:
        raise RayddError(f"no distilled set at {folder}: run `python -m raydd.distill` first") from None
    if manifest.kind != DISTILLED_KIND:
        raise RayddError(f"{folder} holds a {manifest.kind!r}, not a distilled set")
    table = pa.ipc.open_file(pa.py_buffer(read_bytes(folder.child(SHARD_NAME)))).read_all()
    videos = tensor_numpy(table.column("videos"))
    meta = manifest.metadata
    return DistilledSet(
        videos_NCTHW=torch.from_numpy(videos.copy()),
        labels=torch.from_numpy(table.column("label").to_numpy().astype(np.int64)),
        classes=tuple(meta["classes"]),
        clip_shape=tuple(meta["clip_shape"]),
        dataset_uri=meta["dataset_uri"],
        metadata=meta,
    )
