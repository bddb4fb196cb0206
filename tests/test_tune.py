"""``python -m raydd.tune`` on a tiny built-in dataset with real local Ray and a real SQLite MLflow: a
2-trial sweep writes a preset that ``raydd.distill`` reads, nests its trials' MLflow runs (written by the
driver), runs stage 1 once, and an interrupted sweep resumes with the same command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from raydd.config import parse_config
from raydd.distill.presets import Preset
from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import resolve_presets
from raydd.tune import TuneConfig, main
from raydd.tuning.trial import validation_split
from tests.conftest import store_holding

pytestmark = pytest.mark.usefixtures("ray_cluster", "mlflow_in_each_store")

TINY = [
    "--dataset",
    "builtin",
    "--method",
    "dm",
    "--num-samples",
    "2",
    "--max-concurrent",
    "1",
    "--iterations",
    "3",
    "--eval-epochs",
    "2",
    "--network-width",
    "8",
    "--batch-real",
    "4",
    "--grace-period",
    "3",
]


def _sweep(store: str) -> Path:
    (folder,) = [p for p in (Path(store) / "tune").iterdir() if p.is_dir()]
    return folder


def _children(store: str, parent_id: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("raydd-tune")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def test_the_validation_split_holds_out_a_seeded_fraction_of_every_class() -> None:
    labels = torch.arange(4).repeat_interleave(10)
    train, validation = validation_split(labels, 4, 0.2, seed=0)
    assert sorted([*train, *validation]) == list(range(40)) and set(train).isdisjoint(validation)
    assert torch.bincount(labels[validation]).tolist() == [2, 2, 2, 2]
    assert (
        validation.tolist()
        == validation_split(labels, 4, 0.2, seed=0)[1].tolist()
        != validation_split(labels, 4, 0.2, seed=1)[1].tolist()
    )


@pytest.mark.slow
def test_a_sweep_writes_a_usable_preset_and_nested_runs_with_stage_one_once(
    tiny_datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = store_holding(tiny_datasets, tmp_path)
    assert main(["--store", store, *TINY]) == 0
    out = capsys.readouterr().out
    folder = _sweep(store)
    assert [p.name for p in folder.iterdir() if p.name == "static"] == [
        "static"
    ]  # stage 1: one folder, every trial reads it
    best = json.loads((folder / "best_preset.json").read_text())
    config, _ = parse_config(
        DistillConfig, ["--store", store, "--preset-file", str(folder / "best_preset.json")], "raydd.distill"
    )
    preset = resolve_presets(config).run
    assert isinstance(preset, Preset) and preset.iterations == 3 and preset.network_width == 8
    assert (preset.lr_dynamic, preset.lr_hal) == (best["preset"]["lr_dynamic"], best["preset"]["lr_hal"])

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("raydd-tune").experiment_id], filter_string="tags.`raydd.sweep` != ''"
    )
    children = _children(store, parent.info.run_id)
    assert len(children) == 2 and all(child.info.status == "FINISHED" for child in children)
    # The driver wrote every run: the experiment holds the sweep's run and one per trial, nothing from the trials'
    # own processes (they only report to Tune).
    experiment_id = client.get_experiment_by_name("raydd-tune").experiment_id
    assert len(client.search_runs([experiment_id])) == 3
    assert all({"lr_dynamic", "lr_hal"} <= set(child.data.params) for child in children)
    assert all(child.data.metrics["validation_clips"] > 0 for child in children)
    (winner,) = [child for child in children if child.data.tags["raydd.trial_id"] == best["sweep"]["trial_id"]]
    assert (
        best["sweep"]["val_top1"]
        == pytest.approx(winner.data.metrics["val_top1"])
        == max(child.data.metrics["val_top1"] for child in children)
    )
    assert float(winner.data.params["lr_dynamic"]) == pytest.approx(best["preset"]["lr_dynamic"])
    assert [m.step for m in client.get_metric_history(winner.info.run_id, "loss")] == [0, 1, 2]
    assert parent.data.metrics["best/val_top1"] == pytest.approx(best["sweep"]["val_top1"])
    assert "val top-1" in out and out.count(" DONE") == 2


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_with_the_same_command(
    tiny_datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_holding(tiny_datasets, tmp_path)
    monkeypatch.setenv("RAYDD_FAULTS", "interrupt_after_trials=1")  # the first attempt stops after one trial
    command = ["--store", store, *TINY]
    assert main(command) == 1
    assert "re-run the same command to resume" in capsys.readouterr().err
    folder = _sweep(store)
    assert not (folder / "best_preset.json").exists()
    (first,) = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("_trial")]
    first_result = (first / "result.json").read_text()
    parent_id = (folder / "mlflow_parent_run").read_text()
    assert len(_children(store, parent_id)) == 1

    assert main(command) == 0
    out = capsys.readouterr().out
    assert "resuming the sweep" in out and "stage 1: reusing the still images" in out  # stage 1 is not run again either
    trials = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("_trial"))
    assert len(trials) == 2 and first in trials
    assert (first / "result.json").read_text() == first_result  # the finished trial was not run again
    assert (folder / "best_preset.json").exists() and (folder / "mlflow_parent_run").read_text() == parent_id
    assert len(_children(store, parent_id)) == 2
    assert TuneConfig(store=store).name() != folder.name  # the settings name the sweep


def test_the_interrupt_fault_is_not_a_flag() -> None:
    with pytest.raises(SystemExit):
        parse_config(TuneConfig, ["--interrupt-after-trials", "1"], "raydd.tune")
