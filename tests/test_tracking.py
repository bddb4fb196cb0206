"""MLflow tracking on a real SQLite store."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from raydd.tracking import flatten, mlflow_run, tracking_uri


def test_default_uri_is_sqlite_in_the_store_unless_the_environment_says_otherwise(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(str(tmp_path / "store")) == f"sqlite:///{tmp_path}/store/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking_uri(str(tmp_path / "store")) == "http://mlflow.internal:5000"


def test_a_remote_store_tracks_in_the_default_store_which_honours_raydd_store(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RAYDD_STORE", str(tmp_path / "default"))
    assert tracking_uri(None) == f"sqlite:///{tmp_path}/default/mlflow.db"
    assert tracking_uri("memory://remote/store") == f"sqlite:///{tmp_path}/default/mlflow.db"  # not ./raydd-store
    monkeypatch.setenv("RAYDD_STORE", "memory://remote/default")
    monkeypatch.chdir(tmp_path)
    assert tracking_uri("memory://remote/store") == f"sqlite:///{tmp_path}/raydd-store/mlflow.db"


def test_a_run_logs_config_metrics_tags_and_status(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = {"dataset": "builtin", "lr": 0.01, "widths": [64, 128], "nested": {"a": None}}
    with mlflow_run(str(tmp_path), "exp", "ok-run", config, {"raydd.dataset": "builtin"}) as tracker:
        for step, loss in enumerate([1.0, 0.5, 0.25]):
            tracker.log_metrics({"loss": loss}, step=step)
        run_id = tracker.run_id
    with pytest.raises(RuntimeError), mlflow_run(str(tmp_path), "exp", "bad-run", config) as tracker:
        failed_id = tracker.run_id
        raise RuntimeError("boom")

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and client.get_run(failed_id).info.status == "FAILED"
    assert run.data.params == {"dataset": "builtin", "lr": "0.01", "widths": "[64, 128]", "nested.a": "null"}
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0, 0.5, 0.25]
    assert run.data.tags["raydd.dataset"] == "builtin" and len(run.data.tags["raydd.git_commit"]) >= 7
    assert (tmp_path / "mlartifacts" / "exp").is_dir()


def test_a_series_logs_every_value_at_its_step_across_batches(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    curve = [1.0 / (i + 1) for i in range(1500)]  # more than one 1000-metric batch
    with mlflow_run(str(tmp_path), "exp", "series", {}) as tracker:
        tracker.log_series({"stage/loss": curve, "stage/seconds": [0.5, 0.25]})
        run_id = tracker.run_id
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    history = sorted(client.get_metric_history(run_id, "stage/loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1500)) and [m.value for m in history] == pytest.approx(curve)
    assert [m.value for m in sorted(client.get_metric_history(run_id, "stage/seconds"), key=lambda m: m.step)] == [
        0.5,
        0.25,
    ]


def test_flatten_keeps_every_field() -> None:
    assert flatten({"a": 1, "b": {"c": True, "d": (1, 2)}}) == {"a": "1", "b.c": "true", "b.d": "[1, 2]"}
