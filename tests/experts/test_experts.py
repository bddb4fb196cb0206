"""``python -m raydd.experts`` on a tiny prepared dataset: Ray tasks, a killed worker, resume, S3, damage, CLI."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from raydd.data import open_prepared
from raydd.data.cache import cache_entry
from raydd.data.preparation import PrepareConfig, prepare
from raydd.errors import RayddError
from raydd.experts import load_parameters, open_trajectory, read_epoch
from raydd.experts.__main__ import main
from raydd.experts.job import ExpertsConfig, settings_for, train_experts
from raydd.experts.trainer import ExpertTask, run_expert
from raydd.faults import MARKERS
from raydd.storage import list_names, read_manifest, resolve

pytestmark = pytest.mark.usefixtures("ray_cluster")

SMALL = dict(frames=4, height=16, width=16)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    prepare(PrepareConfig(store=str(root), **SMALL))
    return root / "datasets"


@pytest.fixture
def store(prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh store holding the prepared built-in dataset (MLflow in its mlflow.db)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copytree(prepared, tmp_path / "store" / "datasets")
    return str(tmp_path / "store")


def _config(store: str, **overrides) -> ExpertsConfig:
    fields = dict(
        store=store, model="convnet", width=16, epochs=2, num_experts=2, batch_size=64, experiment="test-experts"
    )
    return ExpertsConfig(**{**fields, **overrides})


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """The folder's files (the markers of a fault that fired aside), with their times and bytes."""
    names = sorted(name for name in os.listdir(folder) if name != MARKERS)
    return {name: (os.stat(folder / name).st_mtime_ns, (folder / name).read_bytes()) for name in names}


def test_stored_epochs_equal_the_trainers_parameters_and_mlflow_has_the_run(store: str, tmp_path: Path) -> None:
    config = _config(store)
    manifest = train_experts(config)
    folder = Path(store) / "experts" / "builtin" / "convnet"
    assert sorted(os.listdir(folder)) == ["expert-00000.arrow", "expert-00001.arrow", "manifest.json"]
    stored = read_manifest(resolve(str(folder)))
    assert (
        stored.kind == "raydd.experts/1"
        and stored.shards == manifest.shards
        and [s.rows for s in stored.shards] == [3, 3]
    )
    assert [(e["expert"], e["seed"]) for e in stored.metadata["experts"]] == [(0, 0), (1, 1)]
    assert all(0 <= e["train_accuracy"] <= 1 and 0 <= e["test_accuracy"] <= 1 for e in stored.metadata["experts"])

    dataset = open_prepared(f"{store}/datasets/builtin")
    settings = settings_for(config, dataset)
    assert json.loads(json.dumps(settings.to_dict())) == stored.metadata["settings"]
    seen: list[torch.Tensor] = []
    threads = torch.get_num_threads()
    try:  # expert 1 again, in this process, with the same seed
        again = run_expert(
            ExpertTask(1, settings, str(dataset.location), str(tmp_path / "again")),
            on_epoch=lambda t, v: seen.append(v.clone()),
        )
    finally:
        torch.set_num_threads(threads)
    assert len(seen) == 3 and not torch.equal(seen[0], seen[2])
    with open_trajectory(str(folder), 1) as trajectory:
        assert trajectory.metadata["seed"] == 1 and trajectory.spec == settings.model
        assert all(torch.equal(trajectory.epoch(t), seen[t]) for t in range(3))
    assert again.record.test_accuracy == stored.metadata["experts"][1]["test_accuracy"]

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("test-experts").experiment_id])
    assert (
        run.info.status == "FINISHED"
        and run.data.params["model"] == "convnet"
        and run.data.params["num_experts"] == "2"
    )
    assert run.data.metrics["expert1/test_top1"] == pytest.approx(100 * stored.metadata["experts"][1]["test_accuracy"])
    assert run.data.metrics["experts_trained"] == 2 and run.data.metrics["trajectories_per_hour"] > 0
    assert len(run.data.tags["raydd.dataset_manifest_sha256"]) == 64


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_reruns_train_only_the_missing_experts(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(store, model="minic3d", width=8, num_experts=3)
    folder = Path(store) / "experts" / "builtin" / "minic3d"
    monkeypatch.setenv("RAYDD_FAULTS", "fail_expert=1")
    # The fault itself, outside Ray (in a folder of its own): the first attempt leaves its marker and dies
    # mid-trajectory, publishing nothing.
    outside = tmp_path / "outside"
    dataset_uri = f"{store}/datasets/builtin"
    task = ExpertTask(1, settings_for(config, open_prepared(dataset_uri)), dataset_uri, str(outside))
    first = multiprocessing.get_context("spawn").Process(target=run_expert, args=(task,))
    first.start()
    first.join(180)
    assert first.exitcode == 1 and os.listdir(outside) == [MARKERS]
    assert os.listdir(outside / MARKERS) == ["fail_expert-1"]

    manifest = train_experts(config)  # the same fault under Ray: the task dies once, and is retried
    assert os.listdir(folder / MARKERS) == ["fail_expert-1"]
    monkeypatch.delenv("RAYDD_FAULTS")
    assert [s.name for s in manifest.shards] == ["expert-00000.arrow", "expert-00001.arrow", "expert-00002.arrow"]
    assert list(_files(folder)) == ["expert-00000.arrow", "expert-00001.arrow", "expert-00002.arrow", "manifest.json"]
    before = _files(folder)

    grown = train_experts(dataclasses.replace(config, num_experts=4))
    after = _files(folder)
    assert [s.name for s in grown.shards][-1] == "expert-00003.arrow" and len(grown.shards) == 4
    assert all(after[name] == before[name] for name in before if name != "manifest.json")
    assert grown.metadata["experts"][:3] == manifest.metadata["experts"]

    capsys.readouterr()
    train_experts(dataclasses.replace(config, num_experts=4))
    assert "already holds 4 experts (asked for 4) with these settings: nothing to do" in capsys.readouterr().err
    assert _files(folder) == after

    os.remove(folder / "manifest.json")  # as if the driver had died before publishing
    rebuilt = train_experts(dataclasses.replace(config, num_experts=4))
    assert rebuilt.shards == grown.shards and "(4 reused, 0 already there)" in capsys.readouterr().out
    assert all(_files(folder)[name] == after[name] for name in after if name != "manifest.json")

    with pytest.raises(
        RayddError, match=r"minic3d holds experts trained with other settings \(epochs\): pass another --store"
    ):
        train_experts(dataclasses.replace(config, epochs=3))


def test_s3_store_in_bfloat16(s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    store = f"{s3_bucket}/store"
    prepare(PrepareConfig(store=store, **SMALL))
    config = _config(store, model="minic3d", width=8, dtype="bfloat16")
    manifest = train_experts(config)
    dataset = open_prepared(f"{store}/datasets/builtin")
    # the tasks read the dataset through the node cache
    assert all(cache_entry(record).stat().st_size == record.bytes for record in dataset.manifest.shards)
    folder = f"{store}/experts/builtin/minic3d"
    assert list_names(resolve(folder)) == ["expert-00000.arrow", "expert-00001.arrow", "manifest.json"]
    assert read_manifest(resolve(folder)).shards == manifest.shards
    with open_trajectory(folder, 1) as trajectory:
        final = trajectory.epoch(2)
        assert trajectory.dtype == "bfloat16" and trajectory.bytes_read < manifest.shards[1].bytes / 2
    assert torch.equal(final, final.to(torch.bfloat16).float()) and not torch.equal(final, read_epoch(folder, 1, 0))
    model = trajectory.spec.build()
    load_parameters(model, final, trajectory.spec)
    assert model(torch.zeros(1, 3, 4, 16, 16)).shape == (1, 10)
    assert train_experts(config).shards == manifest.shards  # no-op on S3 too


def test_a_truncated_shard_is_named_and_a_deleted_one_is_trained_again(store: str) -> None:
    config = _config(store)
    train_experts(config)
    folder = Path(store) / "experts" / "builtin" / "convnet"
    final = read_epoch(str(folder), 1, 2)
    shard = folder / "expert-00001.arrow"
    os.truncate(shard, shard.stat().st_size // 2)
    with pytest.raises(
        RayddError, match=r"expert-00001\.arrow is damaged .*: delete it and re-run `python -m raydd\.experts`"
    ):
        read_epoch(str(folder), 1, 2)
    with pytest.raises(
        RayddError,
        match=r"expert-00001\.arrow is truncated or modified .*: delete it and re-run `python -m raydd\.experts`",
    ):
        train_experts(config)
    kept = _files(folder)["expert-00000.arrow"]
    os.remove(shard)
    manifest = train_experts(config)
    assert len(manifest.shards) == 2 and _files(folder)["expert-00000.arrow"] == kept
    assert torch.equal(read_epoch(str(folder), 1, 2), final)  # seeded: the same trajectory again


def test_print_config_bad_flags_and_an_unprepared_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print-config", "--num-experts", "5", "--model", "convnet", "--dtype", "bfloat16"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (
        printed["num_experts"] == 5
        and printed["dtype"] == "bfloat16"
        and printed["epochs"] == 11
        and printed["lr_teacher"] == 0.01
    )
    assert ExpertsConfig(dataset="hmdb51").wanted() == 30 and ExpertsConfig(dataset="k400").wanted() == 20
    with pytest.raises(SystemExit) as exited:
        main(["--epochs", "0"])
    assert exited.value.code == 2 and "--epochs: expected a positive integer" in capsys.readouterr().err
    assert main(["--store", str(tmp_path)]) == 1
    assert "python -m raydd.prepare" in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_with_a_killed_worker(store: str) -> None:
    """The real entry point in a fresh process (its own local Ray), expert 0's first attempt killed ($RAYDD_FAULTS)."""
    command = [
        sys.executable,
        "-m",
        "raydd.experts",
        "--store",
        store,
        "--model",
        "convnet",
        "--width",
        "16",
        "--epochs",
        "2",
        "--num-experts",
        "2",
        "--batch-size",
        "64",
    ]
    environment = {**os.environ, "RAY_ADDRESS": "", "RAYDD_FAULTS": "fail_expert=0"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "experts convnet on builtin: 2 trajectories of 2 epochs" in result.stdout
        and "trajectories/hour" in result.stdout
    )
    assert len(read_manifest(resolve(f"{store}/experts/builtin/convnet")).shards) == 2
