"""``python -m raydd.evaluate`` on a tiny prepared dataset: parallel runs on Ray, MLflow, refusals, NaN."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from raydd.data import open_prepared
from raydd.distilled_set import load_distilled, write_distilled
from raydd.errors import RayddError
from raydd.evaluate import EvalConfig, evaluate, main
from raydd.evaluation.sources import random_per_class
from raydd.prepare import PrepareConfig, prepare

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("store")
    prepare(PrepareConfig(store=str(root), frames=4, height=16, width=16))
    return str(root)


@pytest.fixture(autouse=True)
def _local_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _config(store: str, **overrides) -> EvalConfig:
    fields = dict(data=f"{store}/datasets/builtin", store=store, model="cnn_gru", runs=2, epochs=2, batch_size=64, experiment="test-eval")
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
    assert len(client.get_metric_history(run.info.run_id, "run1/train_loss")) == 2
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
    good = write_distilled(str(tmp_path / "good"), torch.randn(10, 3, 4, 16, 16), labels, classes=classes, dataset_uri=dataset_uri, method="dm")
    assert load_distilled(str(tmp_path / "good")).videos_NCTHW.shape == (10, 3, 4, 16, 16)
    assert good.metadata["storage_bytes"] == 10 * 3 * 4 * 16 * 16 * 4
    evaluate(_config(store, data=str(tmp_path / "good"), runs=1, experiment="test-distilled"))

    write_distilled(str(tmp_path / "frames"), torch.randn(10, 3, 8, 16, 16), labels, classes=classes, dataset_uri=dataset_uri, method="dm")
    with pytest.raises(RayddError, match=r"shape \(8, 16, 16, 3\).*\(4, 16, 16, 3\).*--frames"):
        evaluate(_config(store, data=str(tmp_path / "frames")))
    write_distilled(str(tmp_path / "classes"), torch.randn(5, 3, 4, 16, 16), labels[:5], classes=classes[:5], dataset_uri=dataset_uri, method="dm")
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
