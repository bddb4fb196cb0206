"""MLflow tracking on a real SQLite store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

import raydd
from raydd.tracking import PARENT_TAG, end_killed_run, flatten, mlflow_run, tracking_uri


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
    assert run.data.params == {"dataset": "builtin", "lr": "0.01", "widths": "[64, 128]"}  # unset nested.a: not "null"
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


def test_flatten_keeps_every_set_field_and_leaves_unset_ones_out() -> None:
    assert flatten({"a": 1, "b": {"c": True, "d": (1, 2), "e": None}, "f": None}) == {
        "a": "1",
        "b.c": "true",
        "b.d": "[1, 2]",
    }


def test_a_run_with_a_parent_is_nested_under_it(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with mlflow_run(str(tmp_path), "exp", "parent", {}) as parent:
        with mlflow_run(str(tmp_path), "exp", "child", {}, parent_run_id=parent.run_id) as child:
            pass
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(child.run_id).data.tags[PARENT_TAG] == parent.run_id
    assert PARENT_TAG not in client.get_run(parent.run_id).data.tags


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("RAYDD_GIT_COMMIT", "MLFLOW_TRACKING_URI")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_commit_comes_from_raydd_git_commit_where_the_code_has_no_git_checkout(tmp_path: Path) -> None:
    # raydd as a cluster node has it: the package's files without the .git of the checkout they came from.
    shutil.copytree(Path(raydd.__file__).parent, tmp_path / "code" / "raydd")
    code = """
        import os
        from raydd.tracking import mlflow_run
        for commit in ("", "0123456789abcdef0123456789abcdef01234567-dirty", "89abcdef"):
            os.environ["RAYDD_GIT_COMMIT"] = commit
            with mlflow_run("store", "exp", f"run-{commit}", {}) as tracker:
                print(tracker.run_id)
    """
    done = _python(code, tmp_path, PYTHONPATH=str(tmp_path / "code"))
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/store/mlflow.db")
    tags = [client.get_run(run_id).data.tags for run_id in done.stdout.split()]
    assert [(t["raydd.git_commit"], t["raydd.git_dirty"]) for t in tags] == [
        ("unknown", "unknown"),  # no checkout, nothing given: what the cluster recorded before
        ("0123456789abcdef0123456789abcdef01234567", "true"),
        ("89abcdef", "false"),
    ]


def test_a_killed_drivers_run_is_continued_by_the_next_run_of_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = """
        import os, signal
        from raydd.tracking import mlflow_run
        with mlflow_run("store", "exp", "distill-abc", {"seed": 0}, settings_hash="abc") as tracker:
            tracker.log_metrics({"stage/loss": 3.0}, step=0)
            with mlflow_run("store", "exp", "evaluate", {}, parent_run_id=tracker.run_id) as evaluation:
                with mlflow_run("store", "exp", "distill-done", {"seed": 2}, settings_hash="done") as done:
                    print(tracker.run_id, evaluation.run_id, done.run_id, flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)  # a driver killed mid-run: nothing after this runs
    """
    killed = _python(code, tmp_path, PYTHONPATH=str(Path(raydd.__file__).parent.parent))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_id, evaluation_id, done_id = killed.stdout.split()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/store/mlflow.db")
    assert {client.get_run(i).info.status for i in killed.stdout.split()} == {"RUNNING"}  # what a killed driver leaves

    store = str(tmp_path / "store")
    with mlflow_run(store, "exp", "distill-abc", {"seed": 0}, settings_hash="abc") as again:
        again.log_metrics({"stage/loss": 2.0}, step=1)
        # While this driver lives, its run is not taken over: the same settings started now get a run of their own.
        with mlflow_run(store, "exp", "distill-abc", {"seed": 0}, settings_hash="abc") as concurrent:
            pass
    with mlflow_run(store, "exp", "distill-other", {"seed": 1}, settings_hash="other") as other:
        pass
    assert again.run_id == run_id and concurrent.run_id != run_id and other.run_id != run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["raydd.attempts"] == "2"
    assert run.data.tags["raydd.driver"].endswith(f":{os.getpid()}")
    history = sorted(client.get_metric_history(run_id, "stage/loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0)]  # one run holds both attempts' curves
    assert client.get_run(evaluation_id).info.status == "KILLED"  # the continued run's child of the killed attempt
    assert len(client.search_runs([run.info.experiment_id])) == 5

    # A re-run with nothing left to do (its output complete) ends the killed run instead.
    assert end_killed_run(store, "exp", "done", "a re-run found it complete") == done_id
    ended = client.get_run(done_id)
    assert ended.info.status == "KILLED" and ended.data.tags["raydd.ended"] == "a re-run found it complete"
    assert end_killed_run(store, "exp", "done", "again") is None  # nothing RUNNING is left


def test_only_a_tracking_server_is_reachable_from_every_node() -> None:
    from raydd.tracking import RunAddress

    local = ("sqlite:////tmp/store/mlflow.db", "file:///tmp/mlruns", "/tmp/mlruns", "mlruns")
    assert all(RunAddress(uri, "run").machine_local for uri in local)
    assert not any(RunAddress(uri, "run").machine_local for uri in ("http://mlflow:5000", "https://h", "databricks"))
