"""A Ray job end to end: `ray job submit` to a real local head's job server runs distill on the prepared
built-in dataset, the job succeeds, and its MLflow run names the distilled set it wrote."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient

from raydd.distilled_set import load_distilled
from tests.ray_head import RayHead, ray_head, wait_for

RAY = Path(sys.executable).parent / "ray"
pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a Ray head of its own
START_TIMEOUT_S, JOB_TIMEOUT_S = 60, 120
SMALL = ["--frames", "4", "--height", "16", "--width", "16"]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def head(tmp_path: Path) -> Iterator[RayHead]:
    with ray_head(tmp_path) as started:
        # The job server (in the dashboard) hands a job to the head's dashboard agent, which registers itself
        # right after its HTTP server starts; the job server waits 10 s for that registration, not longer.
        ready = [f"{started.dashboard}/api/version", f"{started.agent}/api/healthz"]
        wait_for(
            lambda: all(map(_answers, ready)),
            within_s=START_TIMEOUT_S,
            watching=started.process,
            what=f"the job server and agent ({', '.join(ready)})",
            log=started.log,
        )
        yield started


def test_ray_job_submit_runs_distill_to_success_and_its_mlflow_run_names_the_distilled_set(
    head: RayHead, tmp_path: Path
) -> None:
    address, cluster, env = head.dashboard, head.address, head.env
    store, tracking = (
        tmp_path / "store",
        f"sqlite:///{tmp_path}/mlflow.db",
    )  # not the store's default: the runtime env must carry it
    prepared = subprocess.run(
        [sys.executable, "-m", "raydd.prepare", "--store", str(store), *SMALL, "--ray-address", cluster],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    # The venv's interpreter by path, whatever PATH the head's workers have; `ray job submit` quotes each word.
    entrypoint = [
        sys.executable,
        "-m",
        "raydd.distill",
        "--dataset",
        "builtin",
        "--paradigm",
        "naive",
        "--iterations",
        "3",
        "--checkpoint-every",
        "3",
        "--network-width",
        "8",
        "--batch-real",
        "4",
        "--eval-runs",
        "0",
        "--store",
        str(store),
    ]
    # RAYDD_GIT_COMMIT as the README's submit line fills it where the job is submitted (the cluster has no .git).
    commit = "0123456789abcdef0123456789abcdef01234567-dirty"
    runtime_env = {
        "env_vars": {
            "MLFLOW_TRACKING_URI": tracking,
            "RAY_AUTH_MODE": "disabled",
            "PYTHONUNBUFFERED": "1",
            "RAYDD_GIT_COMMIT": commit,
        }
    }
    submission_id = f"raydd-test-{tmp_path.name}"
    submitted = subprocess.run(
        [
            str(RAY),
            "job",
            "submit",
            "--address",
            address,
            "--submission-id",
            submission_id,
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--no-wait",
            "--",
            *entrypoint,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]

    client = JobSubmissionClient(address)
    status = wait_for(
        lambda: (s := client.get_job_status(submission_id)).is_terminal() and s,
        within_s=JOB_TIMEOUT_S,
        watching=head.process,
        what=f"job {submission_id} ending",
        log=head.log,
    )
    logs = client.get_job_logs(submission_id)
    assert status == JobStatus.SUCCEEDED, (
        f"job {submission_id} is {status} after at most {JOB_TIMEOUT_S} s; its log:\n{logs[-4000:]}"
    )
    assert "distilled builtin with dm naive" in logs, logs[-4000:]
    # The driver's output holds each Ray Train worker line once (Ray Train's print patch doubled them), among them
    # the stage's progress bar with its ETA.
    (started,) = [line for line in logs.splitlines() if "[naive] run builtin-dm-naive-ipc1-" in line]
    assert logs.count(started[started.index("[naive] run") :]) == 1, logs[-4000:]
    assert len(re.findall(r"\[naive\] \[#{20}\] 100% 3/3 [\d.]+ s/it ETA 0s loss ", logs)) == 1, logs[-4000:]

    mlflow = MlflowClient(tracking_uri=tracking)
    experiment = mlflow.get_experiment_by_name("raydd-distill")
    assert experiment is not None, f"no raydd-distill experiment at {tracking}"
    (run,) = mlflow.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["raydd.method"] == "dm-naive"
    assert (run.data.tags["raydd.git_commit"], run.data.tags["raydd.git_dirty"]) == (commit[:40], "true")
    output = run.data.tags["raydd.output"]
    assert Path(output).parent == store / "distilled" / "builtin" and Path(output).is_dir(), output
    assert output in logs
    distilled = load_distilled(output)
    assert distilled.dataset_uri == str(store / "datasets" / "builtin") and distilled.metadata["method"] == "dm-naive"
