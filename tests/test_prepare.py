"""``python -m raydd.prepare`` end to end on the built-in dataset: local and S3 stores, crashes, re-runs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from raydd.data import open_prepared
from raydd.data.ingest import plan_shards, write_shard
from raydd.data.layouts import index_source
from raydd.data.preparation import PrepareConfig, prepare
from raydd.errors import RayddError
from raydd.faults import MARKERS, marker_location
from raydd.storage import list_names, read_bytes, resolve

pytestmark = pytest.mark.usefixtures("ray_cluster")

# Small clips and small shards: several shards per split, so crashes can land between them.
SMALL = dict(frames=4, height=16, width=16, shard_mb=0.2)


def _shard_files(dataset_uri: str) -> list[str]:
    return [name for name in list_names(resolve(dataset_uri)) if name.endswith(".arrow")]


def test_builtin_prepares_with_the_manifest_written_last(tmp_path) -> None:
    manifest = prepare(PrepareConfig(store=str(tmp_path), **SMALL))
    dataset = open_prepared(str(tmp_path / "datasets" / "builtin"))
    assert manifest.metadata["clips"] == {"train": 300, "test": 200}
    assert set(dataset.manifest.metadata["class_counts"]["train"].values()) == {30}
    assert len(manifest.group("train")) > 1 and len(manifest.group("test")) >= 1
    assert sorted(_shard_files(str(dataset.location))) == sorted(s.name for s in manifest.shards)
    frames, labels = dataset.split("train").batch(np.arange(300))
    assert frames.shape == (300, 4, 16, 16, 3) and str(frames.dtype) == "torch.uint8"
    assert sorted(labels.bincount().tolist()) == [30] * 10
    assert all(0 < m < 1 for m in dataset.mean) and all(0 < s < 1 for s in dataset.std)


def test_second_run_is_a_no_op_and_other_settings_need_overwrite(tmp_path) -> None:
    config = PrepareConfig(store=str(tmp_path), **SMALL)
    prepare(config)
    dataset_uri = str(tmp_path / "datasets" / "builtin")
    before = {name: os.stat(os.path.join(dataset_uri, name)).st_mtime_ns for name in list_names(resolve(dataset_uri))}
    prepare(config)
    after = {name: os.stat(os.path.join(dataset_uri, name)).st_mtime_ns for name in list_names(resolve(dataset_uri))}
    assert before == after

    with pytest.raises(RayddError, match=r"other settings \(num_frames\): pass --overwrite to raydd.prepare"):
        prepare(dataclasses.replace(config, frames=2))
    assert open_prepared(dataset_uri).spec.num_frames == 4

    prepare(dataclasses.replace(config, frames=2, overwrite=True))
    dataset = open_prepared(dataset_uri)
    assert dataset.spec.num_frames == 2
    assert sorted(_shard_files(dataset_uri)) == sorted(s.name for s in dataset.manifest.shards)  # old shards removed


def test_a_rerun_writes_again_a_shard_cut_short_on_storage(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """A complete dataset whose shard was truncated on storage: the re-run names it, writes it again (the very same
    bytes) and leaves the intact shards alone."""
    config = PrepareConfig(store=str(tmp_path), **SMALL)
    manifest = prepare(config)
    dataset_uri = str(tmp_path / "datasets" / "builtin")
    cut = manifest.group("train")[1]
    intact = {s.name: os.stat(os.path.join(dataset_uri, s.name)).st_mtime_ns for s in manifest.shards if s != cut}
    os.truncate(os.path.join(dataset_uri, cut.name), cut.bytes // 2)
    capsys.readouterr()

    assert prepare(config).shards == manifest.shards
    assert f"{cut.name} missing or not the size its manifest lists" in capsys.readouterr().err
    assert {name: os.stat(os.path.join(dataset_uri, name)).st_mtime_ns for name in intact} == intact
    assert open_prepared(dataset_uri).split("train", verify=True) is not None  # every SHA-256 matches


def test_a_crashed_writer_leaves_no_manifest_and_a_rerun_completes(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = PrepareConfig(store=str(tmp_path), workers=1, **SMALL)
    monkeypatch.setenv("RAYDD_FAULTS", "fail_shard=2")
    with pytest.raises(RayddError, match="injected fault"):
        prepare(config)
    dataset_uri = str(tmp_path / "datasets" / "builtin")
    assert "manifest.json" not in list_names(resolve(dataset_uri))
    survivors = set(_shard_files(dataset_uri))
    assert survivors and not any(name.startswith(".") for name in list_names(resolve(dataset_uri)))
    with pytest.raises(RayddError, match="no prepared dataset"):
        open_prepared(dataset_uri)

    monkeypatch.delenv("RAYDD_FAULTS")
    manifest = prepare(config)
    names = {shard.name for shard in manifest.shards}
    assert survivors < names  # finished shards were kept and reused, the failed one written now
    assert manifest.metadata["clips"] == {"train": 300, "test": 200}


def test_crash_while_overwriting_keeps_the_old_dataset_readable(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = PrepareConfig(store=str(tmp_path), **SMALL)
    prepare(config)
    dataset_uri = str(tmp_path / "datasets" / "builtin")
    old_manifest = read_bytes(resolve(dataset_uri).child("manifest.json"))
    monkeypatch.setenv("RAYDD_FAULTS", "fail_shard=0")
    with pytest.raises(RayddError):
        prepare(dataclasses.replace(config, frames=2, overwrite=True))
    assert read_bytes(resolve(dataset_uri).child("manifest.json")) == old_manifest
    assert len(open_prepared(dataset_uri).split("test")) == 200


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
@pytest.mark.slow
def test_a_transient_storage_error_is_retried_and_gives_the_same_shards(
    where: str, tmp_path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Every shard's first write loses its connection before it commits; Ray runs the task again and the retry
    writes the very same shard (same fingerprinted name, bytes and checksum) with nothing left of the first."""
    store = str(tmp_path / "store") if where == "local" else request.getfixturevalue("s3_bucket") + "/store"
    monkeypatch.setenv("RAYDD_FAULTS", "drop_shard_writes")
    manifest = prepare(PrepareConfig(store=store, **SMALL))
    dataset = resolve(f"{store}/datasets/builtin")
    # every shard's first write failed: each left its marker in the store, where a retry on any node sees it
    markers = list_names(dataset.child(MARKERS))
    assert markers == sorted(marker_location(dataset, "drop_shard_writes", s.name).name for s in manifest.shards)
    monkeypatch.delenv("RAYDD_FAULTS")
    clean = prepare(PrepareConfig(store=str(tmp_path / "clean"), **SMALL))
    assert manifest.shards == clean.shards
    assert list_names(dataset) == sorted([s.name for s in manifest.shards] + ["manifest.json", MARKERS])
    assert len(open_prepared(dataset.uri).split("test", verify=True)) == 200


def test_a_shard_reports_progress_clip_by_clip(tmp_path) -> None:
    config = PrepareConfig(store=str(tmp_path), **SMALL)
    spec = config.spec()
    index = index_source(spec, None)
    plans = plan_shards(spec, index, config.shard_mb)
    assert len(plans) < len(index.clips)
    plan = plans[0]
    target = str(tmp_path / "datasets" / "builtin")
    for reused in (False, True):
        reports: list[int] = []
        result = write_shard(spec, plan, target, None, len(index.classes), progress=reports.append)
        assert result.reused == reused
        # one report a clip while writing; one for all of them when the shard is found already written
        assert reports == ([len(plan.clips)] if reused else list(range(1, len(plan.clips) + 1)))


def test_s3_round_trip(s3_bucket: str) -> None:
    store = f"{s3_bucket}/store"
    manifest = prepare(PrepareConfig(store=store, **SMALL))
    dataset = open_prepared(f"{store}/datasets/builtin")
    assert dataset.manifest.shards == manifest.shards
    test = dataset.split("test", verify=True)
    frames, labels = test.batch(list(range(len(test))))
    assert frames.shape == (200, 4, 16, 16, 3)
    assert prepare(PrepareConfig(store=store, **SMALL)).shards == manifest.shards  # no-op on S3 too


def test_missing_bucket_is_reported_before_any_work() -> None:
    with pytest.raises(RayddError, match="bucket 'raydd-no-such-bucket' .* does not exist"):
        prepare(PrepareConfig(store="s3://raydd-no-such-bucket/store", **SMALL))


@pytest.mark.slow
def test_command_line_runs_end_to_end(tmp_path) -> None:
    """The real entry point in a fresh process (its own local Ray), as a user types it."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "raydd.prepare",
            "--store",
            str(tmp_path),
            "--frames",
            "4",
            "--height",
            "16",
            "--width",
            "16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prepared builtin: 500 clips (300 train / 200 test)" in result.stdout
    assert "clips/s" in result.stdout
    assert open_prepared(str(tmp_path / "datasets" / "builtin")).spec.num_frames == 4
