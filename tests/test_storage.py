"""Storage on a local folder and on a real S3-compatible server: atomic writes, manifests, clear errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from raydd.errors import RayddError
from raydd.storage import (
    UPLOAD_PART_BYTES,
    Manifest,
    ManifestNotFound,
    ShardRecord,
    atomic_writer,
    exists,
    list_names,
    open_manifest,
    read_bytes,
    read_manifest,
    resolve,
    sha256,
    write_bytes,
    write_manifest,
)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/store"


def test_write_then_read_round_trip(root: str) -> None:
    location = resolve(root).child("folder", "blob.bin")
    write_bytes(location, b"payload")
    assert read_bytes(location) == b"payload"
    assert list_names(resolve(root).child("folder")) == ["blob.bin"]
    assert sha256(location) == "239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5"


def test_a_failed_write_leaves_nothing_behind(root: str) -> None:
    folder = resolve(root).child("folder")
    write_bytes(folder.child("keep.bin"), b"old")
    with pytest.raises(RuntimeError), atomic_writer(folder.child("keep.bin")) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("writer crashed")
    assert read_bytes(folder.child("keep.bin")) == b"old"
    assert list_names(folder) == ["keep.bin"]


def test_an_object_larger_than_one_part_streams_up_in_parts_and_round_trips(s3_bucket: str) -> None:
    location = resolve(s3_bucket).child("big", "shard.arrow")
    payload = np.random.default_rng(0).integers(0, 256, 2 * UPLOAD_PART_BYTES + 12345, dtype=np.uint8)
    with atomic_writer(location) as handle:
        handle.write(b"head")
        handle.write(payload)  # one write of 2.5 parts: handed on a part at a time
        handle.write(memoryview(b"tail"))
    expected = b"head" + payload.tobytes() + b"tail"
    assert handle.bytes_written == len(expected)
    assert handle.hexdigest() == hashlib.sha256(expected).hexdigest() == sha256(location)
    assert read_bytes(location) == expected
    etag = location.fs.info(location.path)["ETag"].strip('"')
    assert etag.endswith("-3")  # a multipart upload of 3 parts, not one PUT of a buffered copy


def test_a_failed_multipart_write_leaves_no_object_and_no_upload(s3_bucket: str) -> None:
    folder = resolve(s3_bucket).child("folder")
    write_bytes(folder.child("keep.bin"), b"old")
    for name in ("keep.bin", "new.bin"):
        with pytest.raises(RuntimeError), atomic_writer(folder.child(name)) as handle:
            handle.write(bytes(UPLOAD_PART_BYTES + 1))  # a first part is already uploaded
            raise RuntimeError("writer crashed")
    assert read_bytes(folder.child("keep.bin")) == b"old"
    assert list_names(folder) == ["keep.bin"]
    bucket = s3_bucket.removeprefix("s3://")
    assert folder.fs.list_multipart_uploads(bucket) == []  # aborted, not left to accrue storage charges


def test_manifest_round_trip_and_absence(root: str) -> None:
    folder = resolve(root).child("dataset")
    with pytest.raises(ManifestNotFound):
        read_manifest(folder)
    manifest = Manifest(kind="test/1", shards=(ShardRecord("a.arrow", 3, 10, "ff", "train"),), metadata={"k": [1, 2]})
    write_manifest(folder, manifest)
    loaded = read_manifest(folder)
    assert loaded.shards == manifest.shards
    assert loaded.metadata == {"k": [1, 2]}
    assert loaded.created and loaded.raydd_version
    assert loaded.group("train") == manifest.shards and loaded.group("test") == ()


def test_open_manifest_names_what_is_missing_and_the_command_that_makes_it(tmp_path) -> None:
    folder = resolve(str(tmp_path / "experts"))
    with pytest.raises(RayddError) as missing:
        open_manifest(folder, "raydd.experts/1", what="expert trajectories", make_it="python -m raydd.experts")
    assert str(missing.value) == f"no expert trajectories at {folder}: run `python -m raydd.experts` first"
    write_manifest(folder, Manifest(kind="raydd.dataset/1", shards=(), metadata={}))
    with pytest.raises(RayddError, match=r"no expert trajectories at .* \(it holds a 'raydd.dataset/1'\): run `"):
        open_manifest(folder, "raydd.experts/1", what="expert trajectories", make_it="python -m raydd.experts")
    assert open_manifest(folder, "raydd.dataset/1", what="prepared dataset", make_it="python -m raydd.prepare").kind


def test_local_paths_and_file_uris_resolve_to_the_same_place(tmp_path) -> None:
    write_bytes(resolve(f"file://{tmp_path}/x/y.bin"), b"1")
    assert exists(resolve(str(tmp_path / "x" / "y.bin")))
    assert resolve(f"file://{tmp_path}").is_local


def test_unknown_protocol_is_one_clear_error() -> None:
    with pytest.raises(RayddError, match="cannot open storage location 'nosuch://bucket/x'"):
        resolve("nosuch://bucket/x")
    with pytest.raises(RayddError, match="empty storage location"):
        resolve("")


def test_missing_credentials_are_named(s3_bucket: str, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL_S3=os.environ["AWS_ENDPOINT_URL_S3"],
        AWS_EC2_METADATA_DISABLED="true",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
    )
    code = f"from raydd.storage import resolve, write_bytes; write_bytes(resolve({f'{s3_bucket}/a.bin'!r}), b'x')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "RayddError: no credentials for s3://" in result.stderr
    assert "AWS_ACCESS_KEY_ID" in result.stderr


def test_content_fingerprint_ignores_when_the_manifest_was_written(tmp_path) -> None:
    folder = resolve(str(tmp_path))
    manifest = Manifest(kind="test/1", shards=(ShardRecord("a.arrow", 3, 10, "ff"),), metadata={"k": 1})
    write_manifest(folder, manifest)
    first = read_manifest(folder)
    rewritten = Manifest(kind="test/1", shards=manifest.shards, metadata={"k": 1}, created="2000-01-01T00:00:00")
    assert first.content_sha256() == rewritten.content_sha256() == manifest.content_sha256()
    assert (
        Manifest(kind="test/1", shards=manifest.shards, metadata={"k": 2}).content_sha256() != manifest.content_sha256()
    )
