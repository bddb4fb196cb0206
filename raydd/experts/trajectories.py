"""Trajectory shards: one Arrow IPC file per expert trajectory, one record batch per epoch.

Format (``raydd.trajectory/1``): columns ``epoch`` (int32) and ``params`` (a fixed-size list of the
flattened parameters, float32, or bfloat16 stored as its raw uint16 bits). Row ``t`` holds the
parameters after ``t`` epochs, so row 0 is the initialisation and E epochs give E + 1 rows. Each row
is its own record batch: a reader fetches epoch ``t`` alone through the file footer, from a memory
map locally and with ranged reads on object stores. Schema metadata: the model spec, the expert's
seed, the training settings and the final accuracies.

An experts folder (``STORE/experts/DATASET/MODEL``) holds ``expert-00003.arrow`` files plus a manifest
(kind ``raydd.experts/1``) written last that lists exactly the finished trajectories.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
import pyarrow as pa
import torch

from raydd.errors import RayddError
from raydd.experts.parameters import ModelSpec, flatten_parameters, load_parameters, unflatten_parameters
from raydd.storage import Location, Manifest, ShardRecord, exists, manifest_or_none, resolve, size, storage_errors

TRAJECTORY_FORMAT = "raydd.trajectory/1"
EXPERTS_KIND = "raydd.experts/1"
DTYPES = ("float32", "bfloat16")
_RERUN = "python -m raydd.experts"
# The parameter-vector names are re-exported: trajectories and their readers speak of them together.
__all__ = [
    "DTYPES",
    "EXPERTS_KIND",
    "TRAJECTORY_FORMAT",
    "ModelSpec",
    "Trajectory",
    "TrajectoryRecord",
    "experts_manifest",
    "flatten_parameters",
    "listed_records",
    "load_parameters",
    "open_trajectory",
    "published",
    "read_epoch",
    "settings_difference",
    "shard_name",
    "unflatten_parameters",
    "write_trajectory",
]


def shard_name(expert: int) -> str:
    return f"expert-{expert:05d}.arrow"


def _storage_values(vector_P: torch.Tensor, dtype: str) -> np.ndarray:
    vector_P = vector_P.detach().to("cpu").reshape(-1)
    if dtype == "bfloat16":
        return vector_P.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return vector_P.to(torch.float32).numpy()


def write_trajectory(
    handle: IO[bytes], spec: ModelSpec, epochs: Sequence[torch.Tensor], *, dtype: str, metadata: dict[str, Any]
) -> None:
    """Write a whole trajectory (``epochs[t]``: the flat parameters after t epochs) to an open binary file."""
    value_type = pa.uint16() if dtype == "bfloat16" else pa.float32()
    schema = pa.schema(
        [pa.field("epoch", pa.int32()), pa.field("params", pa.list_(value_type, spec.num_params))],
        metadata={
            "format": TRAJECTORY_FORMAT,
            "model": json.dumps(spec.to_dict()),
            "dtype": dtype,
            "info": json.dumps(metadata),
        },
    )
    with pa.ipc.new_file(pa.PythonFile(handle, mode="w"), schema) as writer:
        for epoch, vector_P in enumerate(epochs):
            params = pa.FixedSizeListArray.from_arrays(
                pa.array(_storage_values(vector_P, dtype), type=value_type), spec.num_params
            )
            writer.write_batch(pa.record_batch([pa.array([epoch], pa.int32()), params], schema=schema))


class _CountingFile(io.RawIOBase):
    """A read-only file that counts the bytes fetched through it (to show that reads are ranged)."""

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__()
        self._handle = handle
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._handle.close()
        super().close()


class Trajectory:
    """One trajectory shard, opened once, serving any epoch without reading the others.

    Local files are memory-mapped; on object stores the file is opened with fsspec without a cache,
    so opening costs the footer and each epoch one ranged read of its own bytes.
    """

    def __init__(self, location: Location | str) -> None:
        self.location = resolve(location) if isinstance(location, str) else location
        self._source: Any = None
        self._file: _CountingFile | None = None
        try:
            with storage_errors(self.location):
                if self.location.is_local:
                    self._source = pa.memory_map(self.location.path, "r")
                else:
                    self._file = _CountingFile(self.location.fs.open(self.location.path, "rb", cache_type="none"))
                    self._source = self._file
            self._reader = pa.ipc.open_file(self._source)
            meta = self._reader.schema.metadata or {}
            if meta.get(b"format") != TRAJECTORY_FORMAT.encode():
                raise RayddError(
                    f"{self.location} is not a raydd trajectory shard: point at STORE/experts/DATASET/MODEL"
                )
            self.spec = ModelSpec.from_dict(json.loads(meta[b"model"]))
            self.dtype = meta[b"dtype"].decode()
            self.metadata: dict[str, Any] = json.loads(meta[b"info"])
        except BaseException as error:
            self.close()
            if isinstance(error, FileNotFoundError):
                raise RayddError(
                    f"no trajectory shard at {self.location}: train it with `{_RERUN}` (a larger --num-experts adds "
                    "experts)"
                ) from None
            if isinstance(error, (pa.ArrowInvalid, pa.ArrowIOError, OSError, KeyError, ValueError)):
                raise self._damaged(error) from None
            raise

    @property
    def num_epochs(self) -> int:
        """Epochs trained (the shard holds this many + 1 parameter vectors)."""
        return self._reader.num_record_batches - 1

    @property
    def bytes_read(self) -> int | None:
        """Bytes fetched from an object store so far (``None`` for a memory-mapped local file)."""
        return None if self._file is None else self._file.bytes_read

    def epoch(self, t: int) -> torch.Tensor:
        """The flat float32 parameters after ``t`` epochs (0: the initialisation), copied out of the file."""
        if not 0 <= t <= self.num_epochs:
            raise RayddError(f"{self.location} has epochs 0..{self.num_epochs}, not {t}: train longer with --epochs")
        try:
            values = self._reader.get_batch(t).column("params").flatten().to_numpy(zero_copy_only=True)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError) as error:
            raise self._damaged(error) from None
        if len(values) != self.spec.num_params:
            raise self._damaged(ValueError(f"epoch {t} has {len(values)} values, expected {self.spec.num_params}"))
        if self.dtype == "bfloat16":
            return torch.from_numpy(values.view(np.int16).copy()).view(torch.bfloat16).float()
        return torch.from_numpy(values.copy())

    def _damaged(self, error: Exception) -> RayddError:
        return RayddError(f"trajectory shard {self.location} is damaged ({error}): delete it and re-run `{_RERUN}`")

    def close(self) -> None:
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> Trajectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _folder(uri_or_location: Location | str) -> Location:
    return resolve(uri_or_location) if isinstance(uri_or_location, str) else uri_or_location


def open_trajectory(experts: Location | str, expert: int) -> Trajectory:
    """Trajectory ``expert`` of an experts folder (``STORE/experts/DATASET/MODEL``)."""
    return Trajectory(_folder(experts).child(shard_name(expert)))


def read_epoch(experts: Location | str, expert: int, epoch: int) -> torch.Tensor:
    """Epoch ``epoch`` of trajectory ``expert``, reading nothing of the other epochs."""
    with open_trajectory(experts, expert) as trajectory:
        return trajectory.epoch(epoch)


@dataclasses.dataclass(frozen=True)
class TrajectoryRecord:
    """One finished trajectory as the manifest lists it."""

    expert: int
    seed: int
    shard: ShardRecord
    train_accuracy: float
    test_accuracy: float
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "expert": self.expert,
            "seed": self.seed,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "seconds": self.seconds,
        }


def experts_manifest(settings: dict[str, Any], records: Sequence[TrajectoryRecord]) -> Manifest:
    ordered = sorted(records, key=lambda r: r.expert)
    return Manifest(
        kind=EXPERTS_KIND,
        shards=tuple(r.shard for r in ordered),
        metadata={"settings": settings, "experts": [r.summary() for r in ordered]},
    )


def listed_records(manifest: Manifest) -> dict[int, TrajectoryRecord]:
    """The trajectories a manifest lists, by expert number."""
    if manifest.kind != EXPERTS_KIND:
        raise RayddError(f"the manifest holds a {manifest.kind!r}, not expert trajectories: use another --store")
    shards = {shard.name: shard for shard in manifest.shards}
    return {
        e["expert"]: TrajectoryRecord(
            e["expert"],
            e["seed"],
            shards[shard_name(e["expert"])],
            e["train_accuracy"],
            e["test_accuracy"],
            e["seconds"],
        )
        for e in manifest.metadata["experts"]
    }


def settings_difference(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Names of the settings that differ (JSON-normalised, so tuples equal lists)."""
    stored, wanted = json.loads(json.dumps(stored)), json.loads(json.dumps(wanted))
    return sorted(key for key in stored.keys() | wanted.keys() if stored.get(key) != wanted.get(key))


def published(folder: Location, settings: dict[str, Any]) -> dict[int, TrajectoryRecord]:
    """The trajectories the folder's manifest lists whose files are present; a manifest written with
    other settings or a listed file of the wrong size is an error. A deleted file is simply missing."""
    manifest = manifest_or_none(folder)
    if manifest is None:
        return {}
    records = listed_records(manifest)
    differ = settings_difference(manifest.metadata.get("settings", {}), settings)
    if differ:
        raise RayddError(
            f"{folder} holds experts trained with other settings ({', '.join(differ)}): pass another --store or "
            "delete that folder"
        )
    present = {}
    for expert, record in records.items():
        location = folder.child(record.shard.name)
        if not exists(location):
            continue
        if size(location) != record.shard.bytes:
            raise RayddError(
                f"trajectory shard {location} is truncated or modified ({size(location)} bytes, manifest says "
                f"{record.shard.bytes}): "
                f"delete it and re-run `{_RERUN}`"
            )
        present[expert] = record
    return present
