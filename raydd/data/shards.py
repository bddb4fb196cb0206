"""Video shards: Arrow IPC files with one row per clip.

Schema: ``label`` (int32), ``source`` (string: where the clip came from), ``frames`` (a fixed-shape
uint8 tensor (T, H, W, C)). A shard is written as **one** record batch, so all its frames are one
contiguous buffer: reading maps the file and views that buffer as an (N, T, H, W, C) numpy array
without copying or decoding anything per clip.
"""

from __future__ import annotations

import dataclasses
import json
from typing import IO

import numpy as np
import pyarrow as pa

from raydd.errors import RayddError
from raydd.storage import Location, read_bytes, storage_errors

SHARD_FORMAT = "raydd.video-shard/1"
DATASET_KIND = "raydd.dataset/1"  # the manifest kind of a prepared dataset (a folder of these shards)


@dataclasses.dataclass(frozen=True)
class ClipShard:
    """The clips of one shard, as zero-copy views of the Arrow buffers."""

    frames_NTHWC: np.ndarray
    labels: np.ndarray
    sources: tuple[str, ...]
    skipped: tuple[dict[str, str], ...]

    def __len__(self) -> int:
        return len(self.labels)


def tensor_array(values_N: np.ndarray) -> pa.ExtensionArray:
    """An Arrow fixed-shape tensor column whose row i is ``values_N[i]`` (one contiguous buffer)."""
    row_shape = list(values_N.shape[1:])
    flat = pa.array(np.ascontiguousarray(values_N).reshape(-1))
    storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(row_shape)))
    return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(flat.type, row_shape), storage)


def tensor_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """(N, *shape) numpy view of a fixed-shape tensor column; no copy when it is a single chunk."""
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    shape = tuple(array.type.shape)
    if len(array) == 0:
        return np.empty((0, *shape), array.type.value_type.to_pandas_dtype())
    return array.storage.flatten().to_numpy(zero_copy_only=True).reshape((-1, *shape))


def _schema(clip_shape: tuple[int, ...], skipped: list[dict[str, str]]) -> pa.Schema:
    return pa.schema(
        [
            pa.field("label", pa.int32()),
            pa.field("source", pa.string()),
            pa.field("frames", pa.fixed_shape_tensor(pa.uint8(), list(clip_shape))),
        ],
        metadata={"format": SHARD_FORMAT, "skipped": json.dumps(skipped)},
    )


def write_clip_shard(
    handle: IO[bytes],
    frames_NTHWC: np.ndarray,
    labels: np.ndarray,
    sources: list[str],
    skipped: list[dict[str, str]],
) -> None:
    """Write one shard (one record batch) to an open binary file."""
    clip_shape = tuple(frames_NTHWC.shape[1:])
    if frames_NTHWC.dtype != np.uint8 or len(clip_shape) != 4:
        raise ValueError(f"frames must be uint8 (N, T, H, W, C), got {frames_NTHWC.dtype} {frames_NTHWC.shape}")
    batch = pa.record_batch(
        [pa.array(labels, type=pa.int32()), pa.array(sources, type=pa.string()), tensor_array(frames_NTHWC)],
        schema=_schema(clip_shape, skipped),
    )
    with pa.ipc.new_file(pa.PythonFile(handle, mode="w"), batch.schema) as writer:
        writer.write_batch(batch)


def _open_buffer(location: Location) -> pa.Buffer:
    """The shard's bytes: memory-mapped when local, fetched in one GET otherwise."""
    with storage_errors(location):
        if location.is_local:
            return map_file(location.path)
        return pa.py_buffer(read_bytes(location))


def map_file(path: str) -> pa.Buffer:
    """A read-only memory map of a local file: its pages belong to the page cache, shared by every
    process of the node, not to this process's private memory."""
    return pa.memory_map(path, "r").read_buffer()


def _open_table(source: pa.Buffer | pa.NativeFile, name: object, columns: list[int] | None = None) -> pa.Table:
    """The shard's table (only ``columns`` when given); a damaged file is a one-line error naming it."""
    try:
        options = pa.ipc.IpcReadOptions(included_fields=columns) if columns is not None else None
        reader = pa.ipc.open_file(source, options=options)
        if (reader.schema.metadata or {}).get(b"format") != SHARD_FORMAT.encode():
            raise RayddError(f"{name} is not a raydd video shard")
        return reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise RayddError(f"shard {name} is damaged ({error}): delete it and re-run `python -m raydd.prepare`") from None


def read_clip_shard(location: Location) -> ClipShard:
    """Read a shard as zero-copy numpy views, its sources as Python strings (one per clip: for
    inspection; readers of frames use :func:`map_clip_frames`)."""
    table = _open_table(_open_buffer(location), location)
    return ClipShard(
        frames_NTHWC=tensor_numpy(table.column("frames")),
        labels=table.column("label").to_numpy(),
        sources=tuple(table.column("source").to_pylist()),
        skipped=tuple(json.loads((table.schema.metadata or {}).get(b"skipped", b"[]"))),
    )


def map_clip_frames(path: str, name: object) -> tuple[np.ndarray, np.ndarray]:
    """``(frames uint8 (N, T, H, W, C), labels int32 (N,))`` of the local shard file ``path``, both
    read-only views of its memory map: nothing per clip is copied or turned into Python objects."""
    table = _open_table(map_file(path), name)
    return tensor_numpy(table.column("frames")), table.column("label").to_numpy()


def read_label_column(location: Location) -> np.ndarray:
    """The ``label`` column (int32) of a stored shard, reading only it: a few KB of the file (the footer,
    the batch header and the labels), by memory map when local and by ranged reads otherwise."""
    if location.is_local:
        return _open_table(map_file(location.path), location, [0]).column("label").to_numpy()
    with storage_errors(location), location.fs.open(location.path, "rb", cache_type="none") as handle:
        return _open_table(pa.PythonFile(handle, mode="r"), location, [0]).column("label").to_numpy()
