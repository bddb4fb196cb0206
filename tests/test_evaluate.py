"""``python -m raydd.evaluate`` on a tiny prepared dataset: parallel runs on Ray, MLflow, refusals, NaN."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from raydd.classes import random_per_class
from raydd.data import open_prepared
from raydd.distilled_set import load_distilled, write_distilled, write_static_dynamic
from raydd.errors import RayddError
from raydd.evaluate import EvalConfig, evaluate, main
from raydd.evaluation.plan import plan_evaluation
from raydd.evaluation.protocols import PROTOCOL
from raydd.evaluation.runs import execute, training_set
from raydd.evaluation.sources import RepairedStaticDynamic
from raydd.models.hallucinator import Hallucinator
from raydd.prepare import PrepareConfig, prepare

pytestmark = pytest.mark.usefixtures("ray_cluster")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("store")
    prepare(PrepareConfig(store=str(root), frames=4, height=16, width=16))
    return str(root)


@pytest.fixture(autouse=True)
def _local_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _config(store: str, **overrides) -> EvalConfig:
    fields = dict(
        data=f"{store}/datasets/builtin",
        store=store,
        model="cnn_gru",
        runs=2,
        epochs=2,
        batch_size=64,
        experiment="test-eval",
    )
    return EvalConfig(**{**fields, **overrides})


def test_evaluation_logs_a_run_that_mlflow_reads_back(store: str) -> None:
    metrics = evaluate(_config(store))
    assert 0 <= metrics["top1_mean"] <= 100 and metrics["top1_std"] >= 0
    assert {"static_top1_mean", "dynamic_top1_mean", "top5_mean"} <= set(metrics)
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("test-eval")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "cnn_gru" and run.data.params["runs"] == "2" and run.data.params["epochs"] == "2"
    assert run.data.metrics["top1_mean"] == pytest.approx(metrics["top1_mean"])
    assert run.data.metrics["train_clips"] == 300
    mean = open_prepared(f"{store}/datasets/builtin").mean
    assert run.data.params["input.mean"] == str(list(mean))  # the standardisation is recorded
    assert len(client.get_metric_history(run.info.run_id, "run1/train_loss")) == 3  # epochs + 1 passes
    assert run.data.params["raydd.protocol"] == run.data.tags["raydd.protocol"] == "reference-inductive"
    assert run.data.tags["raydd.dataset"] == "builtin" and len(run.data.tags["raydd.dataset_manifest_sha256"]) == 64


def test_random_ipc_trains_on_k_clips_per_class(store: str) -> None:
    labels = open_prepared(f"{store}/datasets/builtin").split("train").labels
    chosen = random_per_class(labels, 3, 10, seed=4)
    assert torch.bincount(labels[chosen]).tolist() == [3] * 10
    assert not torch.equal(torch.as_tensor(chosen), torch.as_tensor(random_per_class(labels, 3, 10, seed=5)))
    evaluate(_config(store, random_ipc=3, runs=1, model="convnet", experiment="test-ipc"))
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("test-ipc").experiment_id])
    assert run.data.metrics["train_clips"] == 30 and run.data.tags["raydd.train_kind"] == "random-real"


def test_a_distilled_set_trains_and_a_mismatched_one_is_refused(store: str, tmp_path) -> None:
    dataset_uri = f"{store}/datasets/builtin"
    classes = open_prepared(dataset_uri).classes
    labels = torch.arange(10)
    good = write_distilled(
        str(tmp_path / "good"),
        torch.randn(10, 3, 4, 16, 16),
        labels,
        classes=classes,
        dataset_uri=dataset_uri,
        method="dm",
    )
    assert load_distilled(str(tmp_path / "good")).videos_NCTHW.shape == (10, 3, 4, 16, 16)
    assert good.metadata["storage_bytes"] == 10 * 3 * 4 * 16 * 16 * 4
    evaluate(_config(store, data=str(tmp_path / "good"), runs=1, experiment="test-distilled"))

    write_distilled(
        str(tmp_path / "frames"),
        torch.randn(10, 3, 8, 16, 16),
        labels,
        classes=classes,
        dataset_uri=dataset_uri,
        method="dm",
    )
    with pytest.raises(RayddError, match=r"shape \(8, 16, 16, 3\).*\(4, 16, 16, 3\).*--frames"):
        evaluate(_config(store, data=str(tmp_path / "frames")))
    write_distilled(
        str(tmp_path / "classes"),
        torch.randn(5, 3, 4, 16, 16),
        labels[:5],
        classes=classes[:5],
        dataset_uri=dataset_uri,
        method="dm",
    )
    with pytest.raises(RayddError, match="has 5 classes .* has 10"):
        evaluate(_config(store, data=str(tmp_path / "classes")))


def test_non_finite_loss_names_the_epoch(store: str) -> None:
    with pytest.raises(RayddError, match=r"non-finite training loss at epoch \d+ of run 0 \(lr 1e\+12\): lower --lr"):
        evaluate(_config(store, runs=1, lr=1e12, model="minic3d", epochs=3))


def test_cli_print_config_and_unprepared_data(store: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", f"{store}/datasets/builtin", "--model", "cnn_lstm", "--print-config"]) == 0
    assert '"model": "cnn_lstm"' in capsys.readouterr().out
    assert main(["--data", str(tmp_path / "nothing"), "--store", str(tmp_path)]) == 1
    assert "python -m raydd.prepare" in capsys.readouterr().err


def test_store_without_data_trains_on_that_stores_builtin_dataset(
    store: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAYDD_STORE", str(tmp_path / "elsewhere"))  # empty: reading it would fail
    command = ["--store", store, "--model", "cnn_gru", "--runs", "1", "--epochs", "1", "--experiment", "test-default"]
    assert main(command) == 0, capsys.readouterr().err
    assert "tested on builtin" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("test-default").experiment_id])
    assert run.data.params["data"] == str(open_prepared(f"{store}/datasets/builtin").location)


def _static_dynamic(store: str, uri: str, ipc: int = 1) -> str:
    """A static-dynamic set of the tiny store's shape (4 x 16 x 16): 2 stills and 2 memories a class per IPC."""
    dataset_uri = f"{store}/datasets/builtin"
    classes = open_prepared(dataset_uri).classes
    count = 2 * ipc * len(classes)
    write_static_dynamic(
        uri,
        static_NCHW=torch.randn(count, 3, 16, 16),
        dynamic_NCTHW=torch.randn(count, 1, 4, 8, 8),
        hallucinator=Hallucinator(frames=4),
        variant="conv",
        classes=classes,
        frames=4,
        dataset_uri=dataset_uri,
        method="dm",
        ipc=ipc,
    )
    return uri


def test_the_protocol_is_in_mlflow_and_the_summary(store: str, tmp_path, capsys: pytest.CaptureFixture) -> None:
    data = _static_dynamic(store, str(tmp_path / "sd"))
    config = _config(store, data=data, model="minic3d", runs=1, experiment="test-protocol")
    metrics = evaluate(config)
    assert metrics["protocol"] == "reference-inductive"
    assert metrics["storage_ratio"] == pytest.approx(load_distilled(data).metadata["storage_ratio"])
    assert "protocol reference-inductive" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("test-protocol").experiment_id])
    assert run.data.params["raydd.protocol"] == run.data.tags["raydd.protocol"] == "reference-inductive"
    assert run.data.metrics["train_clips"] == 10  # re-paired: IPC x classes slots, not the 20 fixed pairs
    assert len(client.get_metric_history(run.info.run_id, "run0/train_loss")) == 3  # epochs + 1 passes


def test_one_part_of_the_protocol_can_be_changed_alone(store: str, tmp_path) -> None:
    """benchmarks/protocol_ablation.py hands execute() a protocol of its own: raydd's without re-pairing renders the
    fixed pairs; raydd's own trains on re-paired slots."""
    data = _static_dynamic(store, str(tmp_path / "sd"))
    fields = dict(model="minic3d", runs=1, random_ipc=0, preset="auto", epochs=1, lr=None, batch_size=8, momentum=0.9)
    plan = plan_evaluation(data=data, test=None, weight_decay=5e-4, seed=0, device="cpu", **fields)
    (task,) = plan.tasks
    fixed_pairs = dataclasses.replace(PROTOCOL, name="fixed-pairs", repair_static_dynamic=False)
    mean, std = plan.reference.mean, plan.reference.std
    assert isinstance(training_set(task, mean, std, 10), RepairedStaticDynamic)
    assert len(training_set(task, mean, std, 10, fixed_pairs)) == 20  # the fixed pairs: 2 a class
    assert execute(task, fixed_pairs).train_clips == 20
    assert execute(task).train_clips == 10  # one re-paired slot a class at IPC 1


def test_stills_only_trains_on_stills_and_refuses_others(store: str, tmp_path, capsys: pytest.CaptureFixture) -> None:
    data = _static_dynamic(store, str(tmp_path / "sd"))
    fields = dict(model="minic3d", runs=1, random_ipc=0, preset="auto", epochs=1, lr=None, batch_size=8, momentum=0.9)
    plan = plan_evaluation(data=data, test=None, weight_decay=5e-4, seed=0, device="cpu", stills_only=True, **fields)
    assert plan.kind == "stills-only" and plan.train_clips == 20
    assert plan.storage_ratio == pytest.approx(2 * 3 * 16 * 16 / (4 * 16 * 16 * 3))  # 2 stills against a 4-frame video
    train = training_set(plan.tasks[0], plan.reference.mean, plan.reference.std, 10)
    videos, labels = train.batch(torch.arange(20), torch.device("cpu"))
    assert videos.shape == (20, 3, 4, 16, 16) and labels.tolist() == torch.arange(10).repeat_interleave(2).tolist()
    assert torch.equal(videos[:, :, 0], videos[:, :, 3])
    metrics = evaluate(_config(store, data=data, stills_only=True, runs=1, experiment="test-stills"))
    assert metrics["storage_ratio"] == pytest.approx(plan.storage_ratio)
    assert "trained on stills-only (20 clips, storage 0.500x)" in capsys.readouterr().out
    assert main(["--data", f"{store}/datasets/builtin", "--store", store, "--stills-only"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--stills-only trains on the still images of a static-dynamic distilled set" in error
    assert "is a prepared dataset" in error and "--paradigm static-dynamic" in error
    classes = open_prepared(f"{store}/datasets/builtin").classes
    naive = str(tmp_path / "naive")
    dataset_uri = f"{store}/datasets/builtin"
    videos = torch.randn(10, 3, 4, 16, 16)
    write_distilled(naive, videos, torch.arange(10), classes=classes, dataset_uri=dataset_uri, method="dm")
    with pytest.raises(RayddError, match="is a videos: give --data a set distilled with --paradigm static-dynamic"):
        evaluate(_config(store, data=naive, stills_only=True))


ANSI = re.compile(r"\x1b\[")


def _evaluate_piped(store: str, tmp_path: Path, **env: str) -> tuple[str, str]:
    """``python -m raydd.evaluate`` as a user runs it into a log file: a process of its own (its own local Ray
    cluster), stdout and stderr pipes."""
    argv = ["--data", f"{store}/datasets/builtin", "--store", store, "--model", "cnn_gru", "--runs", "2"]
    argv += ["--epochs", "2", "--batch-size", "64", "--cpus-per-run", "0.5", "--experiment", "test-piped"]
    clean = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_DEDUP_LOGS", "RAY_COLOR_PREFIX")}
    done = subprocess.run(
        [sys.executable, "-m", "raydd.evaluate", *argv],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


@pytest.mark.slow  # two commands, each with a local Ray cluster of its own: about 45 s on 2 cores
def test_a_piped_evaluation_prints_a_line_per_run_and_the_summary_and_no_worker_noise(
    store: str, tmp_path: Path
) -> None:
    out, err = _evaluate_piped(store, tmp_path)
    for text in (out, err):
        assert not ANSI.search(text) and "repeated" not in text and "train loss" not in text, text
    runs = [line for line in err.splitlines() if line.startswith("evaluate cnn_gru: ")]
    assert [line.split(" run ")[0] for line in runs] == ["evaluate cnn_gru: 1/2", "evaluate cnn_gru: 2/2"], err
    assert all(" ETA " in line for line in runs) and "\r" not in err  # lines, not a carriage-return bar
    (summary,) = [line for line in out.splitlines() if line.startswith("cnn_gru trained on real")]
    assert "over 2 runs" in summary

    # At DEBUG the per-epoch losses come from the workers: every line as it is, uncoloured, none folded.
    out, err = _evaluate_piped(store, tmp_path, RAYDD_LOG_LEVEL="DEBUG")
    for text in (out, err):
        assert not ANSI.search(text) and "repeated" not in text, text
    losses = [line for line in (out + err).splitlines() if "train loss" in line]
    assert sorted(line.split(") ", 1)[1].split(" train loss")[0] for line in losses) == [
        f"[run {run}] epoch {epoch}/3" for run in (0, 1) for epoch in (1, 2, 3)
    ], losses
