"""A Ray job end to end: `ray job submit` to a real local head's job server runs distill on the prepared
built-in dataset, the job succeeds, and its MLflow run names the distilled set it wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient

from raydd.distilled_set import load_distilled
from tests.test_dashboards import _free_port, _stop

RAY = Path(sys.executable).parent / "ray"
START_TIMEOUT_S, JOB_TIMEOUT_S = 60, 120
SMALL = ["--frames", "4", "--height", "16", "--width", "16"]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def job_server(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """A Ray head of its own (never the session's cluster, never `ray stop`) with its dashboard, which
    serves the job API; yields (the job server's http address, the cluster's address, environment for its clients)."""
    temp = Path(tempfile.mkdtemp(prefix="rdj", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(RAY_AUTH_MODE="disabled", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2", RAY_USAGE_STATS_ENABLED="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    gcs, dashboard, agent = f"127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"
    head = subprocess.Popen(
        [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs.rsplit(':', 1)[1]}",
            "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard.rsplit(':', 1)[1]}",
            # Every port of its own: the defaults (e.g. the agent's 52365) may belong to another cluster on this machine.
            f"--dashboard-agent-listen-port={agent.rsplit(':', 1)[1]}", f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}", f"--ray-client-server-port={_free_port()}", f"--metrics-export-port={_free_port()}",
            f"--temp-dir={temp}",
        ],
        env=env, stdout=(tmp_path / "ray-start.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        # The job server (in the dashboard) hands a job to the head's dashboard agent, which registers itself
        # right after its HTTP server starts; the job server waits 10 s for that registration, not longer.
        ready = [f"{dashboard}/api/version", f"{agent}/api/healthz"]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(map(_answers, ready)) and head.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert all(map(_answers, ready)), f"no job server at {dashboard} or no agent at {agent}: {(tmp_path / 'ray-start.log').read_text()[-2000:]}"
        yield dashboard, gcs, env
    finally:
        _stop(head)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_runs_distill_to_success_and_its_mlflow_run_names_the_distilled_set(job_server: tuple[str, str, dict[str, str]], tmp_path: Path) -> None:
    address, cluster, env = job_server
    store, tracking = tmp_path / "store", f"sqlite:///{tmp_path}/mlflow.db"  # not the store's default: the runtime env must carry it
    prepared = subprocess.run(
        [sys.executable, "-m", "raydd.prepare", "--store", str(store), *SMALL, "--ray-address", cluster], env=env, capture_output=True, text=True, timeout=120
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    # The venv's interpreter by path, whatever PATH the head's workers have; `ray job submit` quotes each word.
    entrypoint = [
        sys.executable, "-m", "raydd.distill", "--dataset", "builtin", "--paradigm", "naive", "--iterations", "3", "--checkpoint-every", "3",
        "--network-width", "8", "--batch-real", "4", "--eval-runs", "0", "--store", str(store),
    ]  # fmt: skip
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": tracking, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}}
    submission_id = f"raydd-test-{tmp_path.name}"
    submitted = subprocess.run(
        [str(RAY), "job", "submit", "--address", address, "--submission-id", submission_id, "--runtime-env-json", json.dumps(runtime_env), "--no-wait", "--", *entrypoint],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]

    client = JobSubmissionClient(address)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (status := client.get_job_status(submission_id)).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
    logs = client.get_job_logs(submission_id)
    assert status == JobStatus.SUCCEEDED, f"job {submission_id} is {status} after at most {JOB_TIMEOUT_S} s; its log:\n{logs[-4000:]}"
    assert "distilled builtin with dm naive" in logs, logs[-4000:]

    mlflow = MlflowClient(tracking_uri=tracking)
    experiment = mlflow.get_experiment_by_name("raydd-distill")
    assert experiment is not None, f"no raydd-distill experiment at {tracking}"
    (run,) = mlflow.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["raydd.method"] == "dm-naive"
    output = run.data.tags["raydd.output"]
    assert Path(output).parent == store / "distilled" / "builtin" and Path(output).is_dir(), output
    assert output in logs
    distilled = load_distilled(output)
    assert distilled.dataset_uri == str(store / "datasets" / "builtin") and distilled.metadata["method"] == "dm-naive"
