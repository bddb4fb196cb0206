"""Storage: URIs, atomic writes and manifests. Knows bytes, not videos.

Every location in raydd is a URI: a local path, ``file://``, ``s3://`` (s3fs, configured from the
standard AWS variables, ``AWS_ENDPOINT_URL_S3`` included), or anything else fsspec opens.

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

import fsspec

from raydd.errors import RayddError

MANIFEST_NAME = "manifest.json"
# The store every command uses when --store is not given.
DEFAULT_STORE = os.environ.get("RAYDD_STORE", "raydd-store")
_HASH_CHUNK = 8 << 20
# Stores whose files upload in parts as they are written and publish the object only on close (s3fs).
_STREAMED_PROTOCOLS = {"s3", "s3a"}
# One part of a multipart upload to an object store (S3 takes 5 MiB to 5 GiB): what a writer holds in memory.
UPLOAD_PART_BYTES = 8 << 20


class ManifestNotFound(RayddError):
    """A location that should hold a complete dataset or artifact has no manifest."""


class StorageUnreachable(RayddError, ConnectionError):
    """The storage endpoint did not answer: a wrong URL, or a network blip (so Ray tasks retry it, as an OSError)."""


def transient_storage_errors() -> tuple[type[BaseException], ...]:
    """Errors that may pass on their own: OSError (a dropped connection, a timeout, s3fs's translation of a 5xx
    or of throttling), and botocore's and aiohttp's connection, HTTP and service errors that reach us untranslated.
    Errors a user must fix are :class:`RayddError` (credentials, permissions, missing buckets) and are not here."""
    errors: list[type[BaseException]] = [OSError]
    try:
        import aiohttp
        import botocore.exceptions as boto

        errors += [boto.ConnectionError, boto.HTTPClientError, boto.ClientError, aiohttp.ClientError]
    except ImportError:  # no s3fs: nothing but OSError can come from storage
        pass
    return tuple(errors)


@dataclasses.dataclass(frozen=True)
class Location:
    """A resolved URI: the filesystem that serves it and the path inside that filesystem."""

    uri: str
    fs: fsspec.AbstractFileSystem
    path: str

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    def child(self, *parts: str) -> Location:
        uri = self.uri.rstrip("/")
        path = self.path.rstrip("/")
        for part in parts:
            uri, path = f"{uri}/{part}", f"{path}/{part}"
        return Location(uri=uri, fs=self.fs, path=path)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.uri


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _s3_options() -> dict[str, Any]:
    """s3fs options from the standard AWS variables (botocore reads keys and region itself)."""
    options: dict[str, Any] = {"use_listings_cache": False}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    return options


def resolve(uri: str) -> Location:
    """Turn a URI (or local path) into a :class:`Location`; an unknown scheme is a one-line error."""
    if not isinstance(uri, str) or not uri.strip():
        raise RayddError(f"empty storage location {uri!r}: give a local path, file://, s3:// or another fsspec URI")
    options = _s3_options() if uri.startswith(("s3://", "s3a://")) else {}
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
    except (ValueError, ImportError) as error:
        raise RayddError(
            f"cannot open storage location {uri!r} ({error}): use a local path, file://, s3:// "
            "or a protocol fsspec knows, with its package installed"
        ) from None
    if "file" in _protocols(fs):
        uri = path  # normalised absolute local path
    return Location(uri=uri, fs=fs, path=path)


@contextlib.contextmanager
def storage_errors(location: Location | str) -> Iterator[None]:
    """Translate filesystem and cloud errors into one-line :class:`RayddError` naming the location."""
    try:
        yield
    except RayddError:
        raise
    except PermissionError as error:
        raise RayddError(
            f"permission denied at {location} ({error}): check the credentials and the bucket policy"
        ) from None
    except Exception as error:  # noqa: BLE001 - botocore's errors are not importable without boto
        name = type(error).__name__
        text = str(error)
        if name in {"NoCredentialsError", "PartialCredentialsError"} or "Unable to locate credentials" in text:
            raise RayddError(
                f"no credentials for {location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE), and AWS_ENDPOINT_URL_S3 for a non-AWS endpoint"
            ) from None
        if name in {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"}:
            raise StorageUnreachable(
                f"cannot reach the storage endpoint for {location} ({text}): check AWS_ENDPOINT_URL_S3"
            ) from None
        if isinstance(error, FileNotFoundError) and "specified bucket does not exist" in text.lower():
            raise RayddError(f"bucket of {location} does not exist: create it first") from None
        raise


def require_writable_root(location: Location) -> None:
    """Fail early, before any work, when an object-store location's bucket does not exist."""
    if location.is_local:
        return
    bucket = location.path.split("/", 1)[0]
    with storage_errors(location):
        if not location.fs.exists(bucket):
            raise RayddError(f"bucket {bucket!r} of {location} does not exist: create it first or fix the URI")


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
        elif _STREAMED_PROTOCOLS & set(_protocols(location.fs)):
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
    from raydd import __version__

    stamped = dataclasses.replace(
        manifest,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        raydd_version=__version__,
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
