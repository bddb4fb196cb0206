"""The node cache on a real S3 server (moto): one fill per node, reuse after a restart, damage detected.

Requests are counted on the server side with moto's request recorder, so a test sees what the store
served, not what the client meant to ask for.
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import multiprocessing.synchronize
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from raydd.data.cache import CACHE_ENV, cache_entry, cache_root
from raydd.data.preparation import PrepareConfig, prepare
from raydd.data.reader import PreparedDataset, class_counts, open_prepared, read_labels
from raydd.errors import RayddError

pytestmark = pytest.mark.usefixtures("ray_cluster")
SPLITS = ("train", "test")


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in dataset at 4 x 16 x 16 in small shards (5 train, 3 test)."""
    store = tmp_path_factory.mktemp("store")
    prepare(PrepareConfig(store=str(store), frames=4, height=16, width=16, shard_mb=0.2))
    return store / "datasets" / "builtin"


@pytest.fixture
def s3_dataset(local_dataset: Path, s3_bucket: str, s3_endpoint: str) -> str:
    """A copy of ``local_dataset`` in a fresh bucket, manifest last."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    uri = f"{s3_bucket}/datasets/builtin"
    files = sorted(local_dataset.iterdir(), key=lambda path: path.name == "manifest.json")
    for path in files:
        fs.put_file(str(path), f"{uri}/{path.name}")
    return uri


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh node cache for this test and the processes it starts."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


class Recording:
    """moto's server-side request recorder, started on entry and stopped on exit."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def _call(self, action: str, method: str = "POST") -> bytes:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/{action}", method=method)
        with urllib.request.urlopen(request) as response:
            return response.read()

    def __enter__(self) -> Recording:
        self._call("reset-recording")
        self._call("start-recording")
        return self

    def __exit__(self, *exc: object) -> None:
        self._call("stop-recording")

    def text(self) -> str:
        """The recording as moto writes it: one JSON entry a line."""
        return self._call("download-recording", "GET").decode()

    def gets(self) -> list[tuple[str, str | None]]:
        """``(object name, Range header or None)`` of every GET of an object the server answered."""
        found = []
        for line in self.text().splitlines():
            entry = json.loads(line)
            path = unquote(urlparse(entry["url"]).path)
            if entry["method"] == "GET" and not urlparse(entry["url"]).query:
                headers = {k.lower(): v for k, v in entry["headers"].items()}
                found.append((path.rsplit("/", 1)[-1], headers.get("range")))
        return found


def shard_gets(recording: Recording, dataset: PreparedDataset) -> dict[str, int]:
    """GETs of each shard of ``dataset`` (every shard listed, 0 when never fetched)."""
    counts = collections.Counter(name for name, _ in recording.gets())
    return {record.name: counts[record.name] for record in dataset.manifest.shards}


def fingerprint(uri: str, dataset: PreparedDataset | None = None) -> str:
    """A digest of every clip and label of both splits, read through the cache."""
    digest = hashlib.sha256()
    dataset = dataset or open_prepared(uri)
    for split in SPLITS:
        videos = dataset.split(split)
        frames, labels = videos.batch(np.arange(len(videos)))
        digest.update(frames.numpy().tobytes())
        digest.update(labels.numpy().tobytes())
    return digest.hexdigest()


def _read_in_a_new_process(
    uri: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue
) -> None:
    dataset = open_prepared(uri)  # the manifest, and the S3 client made
    barrier.wait()  # both processes reach the empty cache at once
    results.put(fingerprint(uri, dataset))


def read_in_processes(uri: str, count: int) -> list[str]:
    """``count`` fresh processes (this node's environment, its RAYDD_CACHE included) read ``uri`` at once."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(count), context.Queue()
    processes = [context.Process(target=_read_in_a_new_process, args=(uri, barrier, results)) for _ in range(count)]
    for process in processes:
        process.start()
    found = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return found


def cached_files(root: Path) -> list[str]:
    return sorted(path.name for path in (root / "shards").iterdir()) if (root / "shards").exists() else []


@pytest.mark.slow
def test_two_processes_fill_the_node_cache_once_and_a_restart_fetches_nothing(
    s3_dataset: str, local_dataset: Path, s3_endpoint: str, empty_cache: Path
) -> None:
    dataset = open_prepared(s3_dataset)
    expected = fingerprint(str(local_dataset))
    with Recording(s3_endpoint) as recording:
        assert read_in_processes(s3_dataset, 2) == [expected, expected]
    assert shard_gets(recording, dataset) == {record.name: 1 for record in dataset.manifest.shards}
    assert all(rng is None for _, rng in recording.gets())  # one whole-object GET a shard, not ranged pieces
    assert cached_files(empty_cache) == sorted(f"{record.sha256}.arrow" for record in dataset.manifest.shards)

    with Recording(s3_endpoint) as recording:
        assert read_in_processes(s3_dataset, 1) == [expected]
    assert shard_gets(recording, dataset) == {record.name: 0 for record in dataset.manifest.shards}


def test_frames_are_mapped_from_the_cache_not_copied(s3_dataset: str, empty_cache: Path) -> None:
    train = open_prepared(s3_dataset).split("train")
    assert cache_root() == empty_cache.resolve()
    mapped = Path("/proc/self/maps").read_text()
    for record in train.dataset.manifest.group("train"):
        assert str(cache_entry(record)) in mapped
    assert all(not frames.flags.owndata and not frames.flags.writeable for frames in train._frames)


def flip(data: bytes, start: int, length: int = 100) -> bytes:
    return data[:start] + bytes(b ^ 0xFF for b in data[start : start + length]) + data[start + length :]


def test_a_damaged_cache_entry_is_fetched_again(s3_dataset: str, s3_endpoint: str, empty_cache: Path) -> None:
    dataset = open_prepared(s3_dataset)
    expected = fingerprint(s3_dataset)
    records = dataset.manifest.group("train")[:3]
    truncated, header, frames = (cache_entry(record) for record in records)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    header.write_bytes(flip(header.read_bytes(), header.stat().st_size - 100))  # footer: unreadable, right size
    frames.write_bytes(flip(frames.read_bytes(), frames.stat().st_size // 2))  # readable, wrong pixels
    with Recording(s3_endpoint) as recording:
        dataset.split("train")  # the size check catches the first, the failed read the second
    assert shard_gets(recording, dataset) == {r.name: int(r in records[:2]) for r in dataset.manifest.shards}
    with Recording(s3_endpoint) as recording:
        dataset.split("train", verify=True)  # only the checksum catches flipped pixels
    assert shard_gets(recording, dataset) == {r.name: int(r == records[2]) for r in dataset.manifest.shards}
    assert fingerprint(s3_dataset) == expected


def test_a_store_copy_that_does_not_match_its_manifest_is_refused_and_not_cached(
    s3_dataset: str, s3_endpoint: str, empty_cache: Path
) -> None:
    import s3fs

    dataset = open_prepared(s3_dataset)
    record = dataset.manifest.group("test")[0]
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    data = fs.cat_file(f"{s3_dataset}/{record.name}")
    fs.pipe_file(f"{s3_dataset}/{record.name}", flip(data, len(data) // 2))
    refused = f"shard {s3_dataset}/{record.name} does not match its manifest .*SHA-256"
    with pytest.raises(RayddError, match=refused) as error:
        dataset.split("test")
    assert "\n" not in str(error.value)
    assert f"{record.sha256}.arrow" not in cached_files(empty_cache)
    assert not [name for name in cached_files(empty_cache) if ".tmp-" in name]
    fs.pipe_file(f"{s3_dataset}/{record.name}", data[:-10])
    with pytest.raises(RayddError, match=f"{len(data) - 10} bytes"):
        dataset.split("test")
    assert f"{record.sha256}.arrow" not in cached_files(empty_cache)


def test_labels_come_from_the_label_column_alone(s3_dataset: str, s3_endpoint: str, empty_cache: Path) -> None:
    dataset = open_prepared(s3_dataset)
    with Recording(s3_endpoint) as recording:
        labels = {split: read_labels(dataset, split) for split in SPLITS}
    fetched = 0
    for _, byte_range in recording.gets():
        assert byte_range is not None  # only ranged reads of the label column, never a whole shard
        start, end = byte_range.removeprefix("bytes=").split("-")
        fetched += int(end) - int(start) + 1
    assert fetched < 0.02 * sum(record.bytes for record in dataset.manifest.shards)
    assert cached_files(empty_cache) == []  # a driver fills no cache
    for split in SPLITS:
        videos = dataset.split(split)
        assert np.array_equal(labels[split], videos.labels.numpy())
        assert np.array_equal(read_labels(dataset, split), labels[split])  # now from the cache's maps
        assert np.array_equal(class_counts(dataset, split), np.bincount(labels[split], minlength=len(dataset.classes)))


def test_the_tune_drivers_validation_split_reads_labels_only(
    s3_dataset: str, s3_endpoint: str, empty_cache: Path
) -> None:
    from raydd.distill.presets import Preset
    from raydd.distill.stages import DYNAMIC, StageSpec
    from raydd.tuning.trial import TrialSpec, validation_split

    stage = StageSpec(stage=DYNAMIC, method="dm", dataset_uri=s3_dataset, ipc=1, preset=Preset())
    trial = TrialSpec(stage, validation_fraction=0.2, eval_epochs=1)
    with Recording(s3_endpoint) as recording:
        train, validation = trial.split()
    shards = [(name, byte_range) for name, byte_range in recording.gets() if name != "manifest.json"]
    assert shards and all(byte_range is not None for _, byte_range in shards)  # ranged reads of the label column
    assert cached_files(empty_cache) == []
    dataset = open_prepared(s3_dataset)
    expected = validation_split(dataset.split("train").labels, len(dataset.classes), 0.2, seed=0)
    assert np.array_equal(train, expected[0]) and np.array_equal(validation, expected[1])


def test_a_cache_folder_that_cannot_be_made_is_named_with_the_fix(
    s3_dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "a-file" / "cache"))
    with pytest.raises(RayddError, match=f"cannot use {tmp_path / 'a-file' / 'cache'} as the node cache .*RAYDD_CACHE"):
        open_prepared(s3_dataset).split("test")


def test_the_default_cache_is_the_users_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == (tmp_path / "xdg" / "raydd").resolve()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == (tmp_path / "home" / ".cache" / "raydd").resolve()
