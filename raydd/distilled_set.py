"""The distilled-set artifact: what distillation produces and evaluation trains on.

A distilled set is a folder of Arrow shards plus a manifest (kind ``raydd.distilled/1``) written last.
Two representations, named by the manifest's ``representation``:

* ``videos``: ``videos.arrow`` (``label``, ``values``: float32 (C, T, H, W) videos);
* ``static-dynamic``: ``static.arrow`` (still images (C, H, W)), ``dynamic.arrow`` (dynamic memories
  (Cd, Td, Hd, Wd)) and ``hallucinator.arrow`` (H's flattened parameters). Only these are stored;
  :func:`load_distilled` renders the videos with H.

All values live in model-input space (standardised with the real dataset's mean/std). The metadata
names the classes, the clip shape, the source dataset, the method, and the storage size in bytes
(everything needed to rebuild the videos, float32) with its ratio to IPC full videos per class.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import TensorDataset

from raydd.classes import class_major_labels
from raydd.data.cache import admit, file_sha256, local_shard
from raydd.data.shards import tensor_array, tensor_numpy
from raydd.errors import RayddError
from raydd.models.hallucinator import Hallucinator
from raydd.storage import (
    Location,
    Manifest,
    ShardRecord,
    atomic_writer,
    open_manifest,
    read_bytes,
    resolve,
    size,
    write_manifest,
)

DISTILLED_KIND = "raydd.distilled/1"
VIDEOS, STATIC_DYNAMIC = "videos", "static-dynamic"
BYTES_PER_VALUE = 4  # float32


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


def write_tensor_shard(folder: Location, name: str, values_N: torch.Tensor, labels: torch.Tensor) -> ShardRecord:
    values = values_N.detach().to("cpu", torch.float32).contiguous().numpy()
    table = pa.table({"label": pa.array(labels.cpu().numpy().astype(np.int32)), "values": tensor_array(values)})
    location = folder.child(name)
    with atomic_writer(location) as handle, pa.ipc.new_file(pa.PythonFile(handle, mode="w"), table.schema) as writer:
        writer.write_table(table)
    record = ShardRecord(name, len(values), handle.bytes_written, handle.hexdigest())
    if not location.is_local:  # this node reads it back (stage 2's stills, the driver's preview): cache it
        with tempfile.TemporaryDirectory() as scratch:
            copy = os.path.join(scratch, name)
            with open(copy, "wb") as local, pa.ipc.new_file(local, table.schema) as writer:
                writer.write_table(table)
            if file_sha256(copy) == record.sha256:
                admit(copy, record)
    return record


def read_tensor_shard(
    folder: Location, name: str, record: ShardRecord | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shard's values and labels. With its manifest ``record``, the bytes come through the node cache
    (fetched once per node, checked against the record), as every worker of a stage reads the same artifact."""
    location = folder.child(name)
    if record is None:
        buffer = pa.py_buffer(read_bytes(location))
    else:
        buffer = pa.memory_map(local_shard(location, record), "r").read_buffer()
    table = pa.ipc.open_file(buffer).read_all()
    values = torch.from_numpy(tensor_numpy(table.column("values")).copy())
    return values, torch.from_numpy(table.column("label").to_numpy().astype(np.int64))


def _storage(values: int, num_classes: int, clip_shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "storage_values": values,
        "storage_bytes": values * BYTES_PER_VALUE,
        "full_video_values_per_class": math.prod(clip_shape),
        "num_classes": num_classes,
    }


def _finish(folder: Location, shards: list[ShardRecord], metadata: dict[str, Any]) -> Manifest:
    per_class = len(metadata["classes"]) * metadata["full_video_values_per_class"]
    metadata["storage_ratio"] = (
        metadata["storage_values"] / (per_class * metadata["ipc"]) if metadata.get("ipc") else None
    )
    manifest = Manifest(kind=DISTILLED_KIND, shards=tuple(shards), metadata=metadata)
    write_manifest(folder, manifest)
    return manifest


def write_distilled(
    uri: str,
    videos_NCTHW: torch.Tensor,
    labels: torch.Tensor,
    *,
    classes: tuple[str, ...],
    dataset_uri: str,
    method: str,
    ipc: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Write a distilled set of full videos (shards first, manifest last)."""
    n, c, t, h, w = videos_NCTHW.shape
    folder = resolve(uri)
    shard = write_tensor_shard(folder, "videos.arrow", videos_NCTHW, labels)
    metadata = {
        "representation": VIDEOS,
        "classes": list(classes),
        "clip_shape": [t, h, w, c],
        "dataset_uri": dataset_uri,
        "method": method,
        "ipc": ipc or n // max(1, len(classes)),
        **_storage(videos_NCTHW.numel(), len(classes), (t, h, w, c)),
        **(extra or {}),
    }
    return _finish(folder, [shard], metadata)


def write_static_dynamic(
    uri: str,
    *,
    static_NCHW: torch.Tensor,
    dynamic_NCTHW: torch.Tensor,
    hallucinator: Hallucinator,
    variant: str,
    classes: tuple[str, ...],
    frames: int,
    dataset_uri: str,
    method: str,
    ipc: int,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Write static images, dynamic memories and H (class-major; shards first, manifest last)."""
    num_classes = len(classes)
    c, h, w = static_NCHW.shape[1:]
    folder = resolve(uri)
    spc, dpc = static_NCHW.shape[0] // num_classes, dynamic_NCTHW.shape[0] // num_classes
    flat_P = torch.cat([p.detach().reshape(-1).cpu() for p in hallucinator.parameters()])
    shards = [
        write_tensor_shard(folder, "static.arrow", static_NCHW, class_major_labels(num_classes, spc)),
        write_tensor_shard(folder, "dynamic.arrow", dynamic_NCTHW, class_major_labels(num_classes, dpc)),
        write_tensor_shard(folder, "hallucinator.arrow", flat_P.unsqueeze(0), torch.zeros(1)),
    ]
    values = static_NCHW.numel() + dynamic_NCTHW.numel() + flat_P.numel()
    metadata = {
        "representation": STATIC_DYNAMIC,
        "classes": list(classes),
        "clip_shape": [frames, h, w, c],
        "dataset_uri": dataset_uri,
        "method": method,
        "ipc": ipc,
        "spc": spc,
        "dpc": dpc,
        "dynamic_shape": list(dynamic_NCTHW.shape[1:]),
        "hallucinator": {"variant": variant, "dynamic_channels": int(dynamic_NCTHW.shape[1])},
        **_storage(values, num_classes, (frames, h, w, c)),
        **(extra or {}),
    }
    return _finish(folder, shards, metadata)


def render_pairs(num_classes: int, spc: int, dpc: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The videos a static-dynamic set stands for: per class, video k pairs static k mod SPC with dynamic
    k mod DPC, k < max(SPC, DPC), so every stored memory is shown once. Returns (label, static, dynamic)
    indices."""
    per_class = max(spc, dpc)
    k = torch.arange(num_classes * per_class)
    label, slot = k // per_class, k % per_class
    return label, label * spc + slot % spc, label * dpc + slot % dpc


@dataclasses.dataclass(frozen=True)
class StaticDynamicParts:
    """What a static-dynamic set stores: stills (class-major, SPC a class), dynamic memories (DPC a class) and H."""

    static_NCHW: torch.Tensor
    dynamic_NCTHW: torch.Tensor
    hallucinator: Hallucinator
    metadata: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.metadata["classes"])

    def still_videos(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every still image repeated over the clip's T frames (a still video each) and its class."""
        frames = self.metadata["clip_shape"][0]
        n, c, h, w = self.static_NCHW.shape
        videos = self.static_NCHW.unsqueeze(2).expand(n, c, frames, h, w).contiguous()
        return videos, class_major_labels(self.num_classes, n // self.num_classes)

    def stills_storage_ratio(self) -> float:
        """Values of the stills alone against IPC full videos per class."""
        full = self.num_classes * self.metadata["ipc"] * self.metadata["full_video_values_per_class"]
        return self.static_NCHW.numel() / full


def _open_distilled(uri: str) -> tuple[Location, Manifest, dict[str, ShardRecord]]:
    folder = resolve(uri)
    manifest = open_manifest(folder, DISTILLED_KIND, what="distilled set", make_it="python -m raydd.distill")
    for record in manifest.shards:
        if size(folder.child(record.name)) != record.bytes:
            raise RayddError(
                f"{folder.child(record.name)} does not match its manifest: it was modified or truncated; distil it "
                "again"
            )
    return folder, manifest, {record.name: record for record in manifest.shards}


def load_distilled(uri: str) -> DistilledSet:
    """Load the distilled set at ``uri``: videos in model-input space, labels, and its metadata."""
    folder, manifest, records = _open_distilled(uri)
    meta = manifest.metadata
    if meta.get("representation", VIDEOS) == VIDEOS:
        videos, labels = read_tensor_shard(folder, "videos.arrow", records["videos.arrow"])
    else:
        videos, labels = _render(_parts(folder, meta, records))
    return DistilledSet(
        videos_NCTHW=videos,
        labels=labels,
        classes=tuple(meta["classes"]),
        clip_shape=tuple(meta["clip_shape"]),
        dataset_uri=meta["dataset_uri"],
        metadata=meta,
    )


def load_static_dynamic(uri: str) -> StaticDynamicParts:
    """The stored parts of the static-dynamic set at ``uri`` (stills, memories, H), not rendered."""
    folder, manifest, records = _open_distilled(uri)
    representation = manifest.metadata.get("representation", VIDEOS)
    if representation != STATIC_DYNAMIC:
        raise RayddError(
            f"{folder} is a {representation!r} distilled set, not a static-dynamic one: "
            "distil it with --paradigm static-dynamic"
        )
    return _parts(folder, manifest.metadata, records)


def _parts(folder: Location, meta: dict[str, Any], records: dict[str, ShardRecord]) -> StaticDynamicParts:
    static, _ = read_tensor_shard(folder, "static.arrow", records["static.arrow"])
    dynamic, _ = read_tensor_shard(folder, "dynamic.arrow", records["dynamic.arrow"])
    flat, _ = read_tensor_shard(folder, "hallucinator.arrow", records["hallucinator.arrow"])
    frames, _, _, channels = meta["clip_shape"]
    spec = meta["hallucinator"]
    hallucinator = Hallucinator(
        frames=frames, channels=channels, dynamic_channels=spec["dynamic_channels"], variant=spec["variant"]
    )
    torch.nn.utils.vector_to_parameters(flat[0], hallucinator.parameters())
    return StaticDynamicParts(static, dynamic, hallucinator.requires_grad_(False), meta)


@torch.no_grad()
def _render(parts: StaticDynamicParts) -> tuple[torch.Tensor, torch.Tensor]:
    label, static_index, dynamic_index = render_pairs(parts.num_classes, parts.metadata["spc"], parts.metadata["dpc"])
    return parts.hallucinator(parts.static_NCHW[static_index], parts.dynamic_NCTHW[dynamic_index]), label
