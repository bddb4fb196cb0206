"""Real parts for the whole suite: an S3-compatible server on 127.0.0.1 and one local Ray cluster.

The S3 server (moto's standalone server, a separate process) starts first and its address goes into
the standard AWS variables, so that the Ray workers started afterwards inherit them as a user's
workers would inherit their environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydd.ports import free_port

S3_START_TIMEOUT_S = 60


def _start_draining(process: subprocess.Popen, needle: str) -> tuple[threading.Event, list[str]]:
    """Read the server's output forever (so its pipe never fills); set the event once ``needle`` appears."""
    ready, seen = threading.Event(), []

    def drain() -> None:
        for line in process.stdout:
            if len(seen) < 200:
                seen.append(line)
            if needle in line:
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    return ready, seen


@pytest.fixture(scope="session", autouse=True)
def node_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's node cache (RAYDD_CACHE), set before the Ray cluster starts so that its workers
    inherit it: tests never read or fill the user's own cache."""
    root = tmp_path_factory.mktemp("raydd-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYDD_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def s3_endpoint(node_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1, with the AWS variables pointing at it. Its request
    recorder (``/moto-api/recorder/...``, off until started) writes into a temporary folder."""
    port = free_port()
    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "MOTO_RECORDER_FILEPATH": str(recording)},
    )
    ready, seen = _start_draining(process, "Running on")
    if not ready.wait(S3_START_TIMEOUT_S):
        process.kill()
        raise RuntimeError(f"moto S3 server did not start within {S3_START_TIMEOUT_S} s: {''.join(seen)[-2000:]}")
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    yield endpoint
    process.terminate()
    process.wait(timeout=30)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket; returns ``s3://<bucket>``."""
    import s3fs

    name = f"raydd-test-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint: str, node_cache: Path) -> Iterator[None]:
    """One real local Ray cluster with 2 CPUs for the whole session (its workers see the session's node cache)."""
    import ray

    from raydd.parallel import start_local_ray

    start_local_ray(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_datasets(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in dataset prepared once per session at 4 x 16 x 16 (a store's ``datasets`` folder):
    copy it into a fresh store with :func:`store_holding`."""
    from raydd.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("tiny")
    prepare(PrepareConfig(store=str(root), frames=4, height=16, width=16))
    return root / "datasets"


def store_holding(datasets: Path, root: Path) -> str:
    """A fresh store at ``root`` holding a copy of ``datasets`` and nothing else."""
    shutil.copytree(datasets, root / "datasets")
    return str(root)


@pytest.fixture(scope="module")
def mlflow_in_each_store() -> Iterator[None]:
    """MLflow in each store's own mlflow.db: MLFLOW_TRACKING_URI unset for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield
