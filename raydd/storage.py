"""Storage: URIs, atomic writes and manifests. Knows bytes, not videos.

Every location in raydd is a URI: a local path, ``file://``, ``s3://`` or anything else fsspec opens
(:mod:`raydd.locations` resolves them; this module re-exports its names, the ones every caller uses).

Invariants every stage relies on:

* A dataset or artifact is a folder of shards plus ``manifest.json``, and the manifest is written
  **last**. Readers trust only the manifest, so a writer that crashed leaves nothing visible.
* Every write is atomic: a local file is written under a temporary name and renamed into place; an
  object store receives a multipart upload (or one PUT when small) that makes the object visible only
  when it completes, and is aborted when the writer fails. A reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

from raydd.errors import RayddError
from raydd.locations import (
    Location,
    StorageUnreachable,
    protocols,
    require_writable_root,
    resolve,
    storage_errors,
    transient_storage_errors,
)
from raydd.provenance import VERSION

MANIFEST_NAME = "manifest.json"
_HASH_CHUNK = 8 << 20
# Stores whose files upload in parts as they are written and publish the object only on close (s3fs).
_STREAMED_PROTOCOLS = {"s3", "s3a"}
# One part of a multipart upload to an object store (S3 takes 5 MiB to 5 GiB): what a writer holds in memory.
UPLOAD_PART_BYTES = 8 << 20
__all__ = [
    "MANIFEST_NAME",
    "UPLOAD_PART_BYTES",
    "HashingWriter",
    "Location",
    "Manifest",
    "ManifestNotFound",
    "ShardRecord",
    "StorageUnreachable",
    "atomic_writer",
    "delete",
    "exists",
    "list_names",
    "manifest_or_none",
    "open_manifest",
    "read_bytes",
    "read_manifest",
    "require_writable_root",
    "resolve",
    "sha256",
    "size",
    "storage_errors",
    "transient_storage_errors",
    "write_bytes",
    "write_manifest",
]


class ManifestNotFound(RayddError):
    """A location that should hold a complete dataset or artifact has no manifest."""


def exists(location: Location) -> bool:
    with storage_errors(location):
        return bool(location.fs.exists(location.path))


def read_bytes(location: Location) -> bytes:
    with storage_errors(location):
        return location.fs.cat_file(location.path)


def size(location: Location) -> int:
    with storage_errors(location):
        return int(location.fs.size(location.path))


def list_names(location: Location) -> list[str]:
    """Names of the entries directly inside ``location`` ([] if it does not exist)."""
    with storage_errors(location):
        if not location.fs.exists(location.path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in location.fs.ls(location.path, detail=False))


def delete(location: Location) -> None:
    with storage_errors(location):
        if location.fs.exists(location.path):
            location.fs.rm(location.path)


class HashingWriter(io.RawIOBase):
    """A write-only file that counts and SHA-256-hashes what passes through it (no re-read to checksum).

    Large writes reach the file underneath in pieces of at most ``piece_bytes``, so that a buffering
    file (an object-store upload) sends each part as it fills instead of copying the whole write first.
    """

    def __init__(self, handle: IO[bytes], piece_bytes: int = UPLOAD_PART_BYTES) -> None:
        super().__init__()
        self._handle = handle
        self._digest = hashlib.sha256()
        self._piece_bytes = piece_bytes
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001 - bytes-like
        view = memoryview(data).cast("B")
        self._digest.update(view)
        for start in range(0, view.nbytes, self._piece_bytes):
            self._handle.write(view[start : start + self._piece_bytes])
        self.bytes_written += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.bytes_written

    def flush(self) -> None:
        self._handle.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


@contextlib.contextmanager
def atomic_writer(location: Location) -> Iterator[HashingWriter]:
    """A binary file that becomes visible at ``location`` only when the block exits without error.

    Locally the bytes go to a hidden temporary file in the same folder, then ``os.replace`` moves it
    into place (atomic on POSIX). On an object store they stream out as a multipart upload, one part
    of :data:`UPLOAD_PART_BYTES` at a time (so a writer holds one part, never the whole object); the
    object appears only when the upload completes, and a failure aborts the upload, leaving nothing.
    The file counts and hashes what is written.

    There is no fsync: everything raydd stores can be made again, and a file cut short by a power
    failure no longer matches the size and checksum its manifest lists, so readers name it.
    """
    with storage_errors(location):
        if location.is_local:
            folder, name = os.path.split(location.path)
            os.makedirs(folder, exist_ok=True)
            temporary = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
            try:
                with open(temporary, "wb") as handle:
                    yield HashingWriter(handle)
                os.replace(temporary, location.path)
            finally:
                if os.path.exists(temporary):
                    os.remove(temporary)
        elif _STREAMED_PROTOCOLS & set(protocols(location.fs)):
            # Not a `with` block: closing the file completes the upload, which must not happen on failure.
            upload = location.fs.open(location.path, "wb", block_size=UPLOAD_PART_BYTES)
            try:
                yield HashingWriter(upload)
            except BaseException:
                try:
                    upload.discard()  # aborts the multipart upload, if one was started
                finally:
                    upload.closed = True  # a later close(), the garbage collector's too, would publish it
                raise
            try:
                upload.close()
            except BaseException:
                upload.discard()  # the upload failed to complete: do not leave its parts behind
                raise
        else:  # other fsspec stores: buffered, then one write of the whole object
            buffer = io.BytesIO()
            yield HashingWriter(buffer)
            location.fs.pipe_file(location.path, buffer.getvalue())


def write_bytes(location: Location, data: bytes) -> None:
    with atomic_writer(location) as handle:
        handle.write(data)


def sha256(location: Location) -> str:
    """Streamed SHA-256 of a stored file."""
    digest = hashlib.sha256()
    with storage_errors(location), location.fs.open(location.path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ShardRecord:
    """One shard as the manifest lists it."""

    name: str
    rows: int
    bytes: int
    sha256: str
    group: str = ""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The list of complete shards of a dataset or artifact, plus free-form metadata (the spec, counts)."""

    kind: str
    shards: tuple[ShardRecord, ...]
    metadata: dict[str, Any]
    created: str = ""
    raydd_version: str = ""

    def group(self, name: str) -> tuple[ShardRecord, ...]:
        return tuple(shard for shard in self.shards if shard.group == name)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def content_sha256(self) -> str:
        """A fingerprint of what the manifest lists (shards and metadata), not of when it was written:
        re-making identical data gives the same value."""
        content = {"kind": self.kind, "shards": [dataclasses.asdict(s) for s in self.shards], "metadata": self.metadata}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        shards = tuple(ShardRecord(**shard) for shard in raw.pop("shards"))
        return cls(shards=shards, **raw)


def write_manifest(folder: Location, manifest: Manifest) -> None:
    """Publish ``manifest`` in ``folder``: the last write of any dataset or artifact."""
    stamped = dataclasses.replace(
        manifest,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        raydd_version=VERSION,
    )
    write_bytes(folder.child(MANIFEST_NAME), stamped.to_json().encode())


def read_manifest(folder: Location) -> Manifest:
    """The manifest of ``folder``; :class:`ManifestNotFound` if there is none (an incomplete or absent write)."""
    location = folder.child(MANIFEST_NAME)
    if not exists(location):
        raise ManifestNotFound(f"no complete dataset at {folder} (no {MANIFEST_NAME})")
    try:
        return Manifest.from_json(read_bytes(location).decode())
    except (ValueError, TypeError, KeyError) as error:
        raise RayddError(
            f"unreadable manifest {location} ({error}): delete it and re-run the command that wrote it"
        ) from None


def manifest_or_none(folder: Location) -> Manifest | None:
    try:
        return read_manifest(folder)
    except ManifestNotFound:
        return None


def open_manifest(folder: Location, kind: str, *, what: str, make_it: str) -> Manifest:
    """The manifest of ``folder``, which must be of ``kind``: the one way a stage opens what another made.

    Anything else is one :class:`RayddError` naming ``what`` was expected there and the command that makes it:
    ``no WHAT at FOLDER: run `MAKE_IT` first`` (no manifest: never made, or its writer died before publishing),
    or the same naming the kind found instead."""
    manifest = manifest_or_none(folder)
    if manifest is None:
        raise RayddError(f"no {what} at {folder}: run `{make_it}` first")
    if manifest.kind != kind:
        raise RayddError(
            f"no {what} at {folder} (it holds a {manifest.kind!r}): run `{make_it}` first, or point at another folder"
        )
    return manifest
