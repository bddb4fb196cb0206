"""The node-local cache of prepared shards: each byte of an object store fetched once per node.

Every process that reads frames (Ray Train workers, expert tasks, tune trials, evaluations) asks
:func:`local_shard` for a local path and memory-maps it, so frames live in the page cache, shared by
every process on the node, never in a process's private memory. Local stores are mapped where they
are. A remote shard is downloaded once into ``cache_root()/shards/<sha256>.arrow``:

* content-addressed by the SHA-256 its manifest lists, so worker restarts, stage 1 then stage 2,
  experts then distill and every trial of a sweep find it, and a re-prepared dataset never reuses
  stale bytes;
* filled under an exclusive ``flock`` on ``cache_root()/locks/<sha256>.lock``: concurrent processes
  of a node wait for one download instead of making their own;
* streamed to a temporary file in the same folder, checked against the manifest's size and SHA-256,
  then renamed into place (``os.replace``): an entry is complete or absent, and a mismatch leaves
  nothing behind.

The cache is never evicted by raydd: ``rm -r $RAYDD_CACHE`` frees it when no raydd process runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from raydd.errors import RayddError
from raydd.storage import Location, ShardRecord, sha256, size, storage_errors

CACHE_ENV = "RAYDD_CACHE"
_HASH_CHUNK = 8 << 20
_FILL_THREADS = 4  # shards downloaded at once by one process (one GET each); a lock per shard keeps them unique


def cache_root() -> Path:
    """The node's cache folder: ``$RAYDD_CACHE``, else ``$XDG_CACHE_HOME/raydd`` (``~/.cache/raydd``).

    The default is a per-user folder on the home disk rather than ``/tmp``: it survives between the runs
    that share it (experts, distill, tune), and ``/tmp`` is often a RAM-backed tmpfs, where a cached
    dataset would take the very memory the cache exists to save. On a cluster set ``RAYDD_CACHE`` to the
    instance's local NVMe (``cluster.yaml`` does). It must be a local filesystem: the fill lock is ``flock``.
    """
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).resolve() / "raydd"


def cache_entry(record: ShardRecord) -> Path:
    """Where the shard with ``record``'s SHA-256 lives once cached (it may not be there yet)."""
    return cache_root() / "shards" / f"{record.sha256}.arrow"


def cached(record: ShardRecord) -> Path | None:
    """The complete cache entry of ``record`` (right size), or None; never fetches anything."""
    entry = cache_entry(record)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        if entry.stat().st_size == record.bytes:
            return entry
    return None


def local_shard(location: Location, record: ShardRecord, *, verify: bool = False) -> str:
    """A local, memory-mappable path holding the bytes of shard ``record`` stored at ``location``.

    A local store's own file, after a size check (and a SHA-256 check with ``verify``). A remote shard's
    cache entry, filled first if needed; ``verify`` re-hashes an existing entry and fetches it again when
    it no longer matches (a damaged disk, a hand-edited file).
    """
    if location.is_local:
        actual = size(location)
        if actual != record.bytes or (verify and sha256(location) != record.sha256):
            raise RayddError(
                f"shard {location} does not match its manifest ({actual} bytes, expected {record.bytes}): it was "
                "modified or truncated; re-run `python -m raydd.prepare` with the same settings (it writes it again)"
            )
        return location.path
    entry = cached(record)
    if entry is not None and (not verify or file_sha256(entry) == record.sha256):
        return str(entry)
    with _fill_lock(record):
        entry = cached(record)  # another process may have filled it while this one waited
        if entry is not None and (not verify or file_sha256(entry) == record.sha256):
            return str(entry)
        return str(_fill(location, record))


def local_shards(locations: Sequence[Location], records: Sequence[ShardRecord], *, verify: bool = False) -> list[str]:
    """:func:`local_shard` of many shards, remote ones downloaded a few at a time."""
    if all(location.is_local for location in locations):
        return [local_shard(location, record, verify=verify) for location, record in zip(locations, records)]
    with ThreadPoolExecutor(_FILL_THREADS) as pool:
        return list(pool.map(lambda pair: local_shard(*pair, verify=verify), zip(locations, records)))


@contextlib.contextmanager
def _fill_lock(record: ShardRecord) -> Iterator[None]:
    """An exclusive lock on one cache entry, shared by every process of the node (released if one dies)."""
    folder = cache_root() / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (cache_root() / "shards").mkdir(exist_ok=True)
    except OSError as error:
        raise RayddError(
            f"cannot use {cache_root()} as the node cache ({error}): set {CACHE_ENV} to a writable local folder"
        ) from None
    with open(folder / f"{record.sha256}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fill(location: Location, record: ShardRecord) -> Path:
    """Download ``location`` into its cache entry; call with the entry's lock held."""
    entry = cache_entry(record)
    for stale in glob.glob(str(entry.parent / f".{record.sha256}.tmp-*")):  # left by a killed fill
        os.remove(stale)
    entry.unlink(missing_ok=True)  # a damaged entry: replaced below, or gone if the store's copy is bad too
    temporary = entry.parent / f".{record.sha256}.tmp-{uuid.uuid4().hex}"
    try:
        try:
            with storage_errors(location):
                location.fs.get_file(location.path, str(temporary), **_one_stream(location))
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            raise RayddError(
                f"the node cache {cache_root()} is full ({error}): "
                f"free space there or set {CACHE_ENV} to a larger local disk"
            ) from None
        actual_bytes = temporary.stat().st_size
        actual_sha = file_sha256(temporary) if actual_bytes == record.bytes else "not computed"
        if actual_bytes != record.bytes or actual_sha != record.sha256:
            raise RayddError(
                f"shard {location} does not match its manifest ({actual_bytes} bytes, SHA-256 {actual_sha[:12]}; "
                f"expected {record.bytes}, {record.sha256[:12]}): it was modified or truncated in the store; "
                "re-run `python -m raydd.prepare` with the same settings (it writes it again)"
            )
        os.replace(temporary, entry)
    finally:
        temporary.unlink(missing_ok=True)
    return entry


def _one_stream(location: Location) -> dict[str, int]:
    """s3fs splits a large object into parallel ranged GETs; one streamed GET a shard keeps a node's
    requests countable, and :data:`_FILL_THREADS` shards at once keep the link busy."""
    protocols = (location.fs.protocol,) if isinstance(location.fs.protocol, str) else tuple(location.fs.protocol)
    return {"max_concurrency": 1} if {"s3", "s3a"} & set(protocols) else {}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def admit(path: str | Path, record: ShardRecord) -> None:
    """Put a file this node has just written (and stored under ``record``) into the node cache, so that this
    node never fetches back what it wrote: a checkpoint a restarted worker resumes from, the still images
    stage 2 reads, the distilled set the driver previews. Best effort: a cache that cannot take it is skipped."""
    try:
        with _fill_lock(record):
            if cached(record) is not None:
                return
            entry = cache_entry(record)
            temporary = entry.parent / f".{record.sha256}.tmp-{uuid.uuid4().hex}"
            try:
                try:
                    os.link(path, temporary)  # same filesystem: no copy
                except OSError:
                    shutil.copyfile(path, temporary)
                os.replace(temporary, entry)
            finally:
                temporary.unlink(missing_ok=True)
    except (OSError, RayddError):
        return
