"""A Ray head of a test's own (never the session's cluster, never `ray stop`), and waiting on it.

Other sessions may run Ray clusters on the same machine, so every port is a free one of its own and the
head is stopped by signalling its own `ray start --block` process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from benchmarks.multinode import wait_for
from raydd.ports import free_port

__all__ = ["RayHead", "ray_head", "stop", "wait_for"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RayHead:
    address: str  # the cluster (GCS), for --ray-address
    dashboard: str  # http address of the dashboard and its job server
    agent: str  # http address of the head's dashboard agent
    temp: Path  # Ray's temp dir (its discovery file for Prometheus lands here)
    env: dict[str, str]  # environment for processes that use this head
    process: subprocess.Popen
    log: Path


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (a Ray head then stops the processes it started); if that hangs, SIGKILL its process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@contextlib.contextmanager
def ray_head(tmp_path: Path, **env_overrides: str) -> Iterator[RayHead]:
    temp = Path(tempfile.mkdtemp(prefix="rdh", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(
        RAY_AUTH_MODE="disabled",
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        **env_overrides,
    )
    port, dashboard_port, agent_port = free_port(), free_port(), free_port()
    log = tmp_path / "ray-start.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--dashboard-agent-listen-port={agent_port}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--temp-dir={temp}",
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield RayHead(
            f"127.0.0.1:{port}",
            f"http://127.0.0.1:{dashboard_port}",
            f"http://127.0.0.1:{agent_port}",
            temp,
            env,
            process,
            log,
        )
    finally:
        stop(process)
        shutil.rmtree(temp, ignore_errors=True)
