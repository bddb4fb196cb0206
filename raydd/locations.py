"""Locations: a URI (a local path, ``file://``, ``s3://``, any fsspec URI) resolved to its filesystem, and the
translation of filesystem and cloud errors into one-line :class:`~raydd.errors.RayddError` naming the location.

``s3://`` is served by s3fs, configured from the standard AWS variables (``AWS_ENDPOINT_URL_S3`` included).
What is read and written at a location, atomically, is :mod:`raydd.storage`'s job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import fsspec

from raydd.errors import RayddError


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
        return "file" in protocols(self.fs)

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


def protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
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
    if "file" in protocols(fs):
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
