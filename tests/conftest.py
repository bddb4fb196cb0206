"""Real parts for the whole suite, each started only for the tests that use it: one local Ray cluster and
an S3-compatible server on 127.0.0.1. And the tiers: tests are marked ``ray`` and ``s3`` from the fixtures
they use, ``slow`` by hand (docs/contributing.md).

The S3 server's address goes into the standard AWS variables before Ray starts, so that the Ray workers
inherit them as a user's workers would inherit their environment; the server (moto's, a process of its
own) starts with the first test that uses S3.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydd.ports import free_port

S3_START_TIMEOUT_S = 60
RAY_FIXTURES = {"ray_cluster"}  # a test that uses one, directly or through another fixture, is marked ``ray``
S3_FIXTURES = {"s3_endpoint"}  # ... and ``s3`` (s3_bucket uses s3_endpoint)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``ray`` and ``s3`` from the fixtures a test uses, so that a new test cannot forget them."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & RAY_FIXTURES:
            item.add_marker(pytest.mark.ray)
        if used & S3_FIXTURES:
            item.add_marker(pytest.mark.s3)


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
def s3_port() -> Iterator[socket.socket]:
    """A port on 127.0.0.1 bound (not listening) for the session's S3 server, and the AWS variables
    pointing at it: set before the Ray cluster starts, so that its workers inherit them, while the server
    itself starts only when a test asks for :func:`s3_endpoint`. Until then a request is refused at once."""
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", free_port()))
    port = reserved.getsockname()[1]
    with reserved, pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        }.items():
            patch.setenv(key, value)
        yield reserved


# moto's server (as `python -m moto.server` builds it) on the socket the session bound, so no other
# process can take the port between the session's start and the first S3 test.
SERVE_ON_SOCKET = """
import socket, sys
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server
bound = socket.socket(fileno=int(sys.argv[1]))
bound.listen()
app = DomainDispatcherApplication(create_backend_app)
app.debug = True
server = make_server(*bound.getsockname(), app, threaded=True, request_handler=MotoRequestHandler, fd=bound.fileno())
print("serving", flush=True)
server.serve_forever()
"""


@pytest.fixture(scope="session")
def s3_endpoint(s3_port: socket.socket, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 server (a process of its own) on :func:`s3_port`. Its request recorder
    (``/moto-api/recorder/...``, off until started) writes into a temporary folder."""
    fd, port = s3_port.fileno(), s3_port.getsockname()[1]
    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_ON_SOCKET, str(fd)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        pass_fds=(fd,),
        env={**os.environ, "MOTO_RECORDER_FILEPATH": str(recording), "MOTO_PORT": str(port)},
    )
    ready, seen = _start_draining(process, "serving")
    if not ready.wait(S3_START_TIMEOUT_S):
        process.kill()
        raise RuntimeError(f"moto S3 server did not start within {S3_START_TIMEOUT_S} s: {''.join(seen)[-2000:]}")
    yield os.environ["AWS_ENDPOINT_URL_S3"]
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket; returns ``s3://<bucket>``."""
    if request.node.get_closest_marker("s3") is None:  # asked for by request.getfixturevalue: the marking cannot see it
        pytest.fail(f"{request.node.nodeid} uses S3 unmarked: give it pytest.mark.s3", pytrace=False)
    import s3fs

    name = f"raydd-test-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_cluster(s3_port: socket.socket, node_cache: Path) -> Iterator[None]:
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
