"""raydd on a cluster that starts with no worker nodes: Ray's own autoscaler, with Ray's fake multi-node
provider, launches them from the node types of ``cluster.yaml`` (:func:`benchmarks.multinode.local_autoscaler_config`,
scaled to this machine: 1 CPU a node, ``fake_gpu`` for ``GPU``, a 6 s idle timeout).

The fake provider starts each node's raylet inside the autoscaler's own process, with the head's environment: the
nodes it launches share the head's cache folder. Per-node caches are :mod:`tests.test_multinode`'s business; this
module checks scale-from-zero, idle scale-down and ``--plan``'s prediction of what the autoscaler launches.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.multinode import LocalCluster, autoscaling_cluster, launched_nodes, peak_worker_nodes
from raydd.storage import list_names, read_manifest, resolve

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a Ray cluster with an autoscaler of its own

SMALL = ["--frames", "4", "--height", "16", "--width", "16", "--shard-mb", "0.05"]
DISTILL = ["--method", "dm", "--paradigm", "naive", "--ipc", "1", "--network-width", "8", "--batch-real", "4"]
DISTILL += ["--eval-runs", "0", "--iterations", "4", "--workers", "2", "--cpus-per-worker", "1"]
RUN_S = 600
IDLE_WAIT_S = 180  # 6 s idle timeout, the autoscaler's 1 s updates and node shutdown, on a loaded machine


@pytest.fixture(scope="module")
def autoscaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with autoscaling_cluster(tmp_path_factory.mktemp("autoscaled"), idle_timeout_minutes=0.1) as cluster:
        yield cluster


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-4000:])
    return result.stdout + result.stderr


def _scaled_to_zero(cluster: LocalCluster) -> None:
    cluster.wait_on_head(
        lambda: cluster.worker_nodes_alive() == 0,
        within_s=IDLE_WAIT_S,
        what="no worker node left (the idle timeout)",
        detail=lambda: f"{cluster.worker_nodes_alive()} worker node(s) alive; {cluster.last_error}",
    )


@pytest.fixture(scope="module")
def store(autoscaled: LocalCluster) -> str:
    """The built-in dataset, prepared by ``raydd.prepare --workers 2`` on the cluster while it had no worker."""
    assert autoscaled.worker_nodes_alive() == 0 and autoscaled.launches() == []
    path = str(autoscaled.root / "store")
    _ok(autoscaled.run(["raydd.prepare", "--store", path, *SMALL, "--workers", "2"], timeout=RUN_S))
    return path


def test_prepare_on_a_cluster_of_no_workers_makes_the_autoscaler_launch_some(
    autoscaled: LocalCluster, store: str
) -> None:
    launched = launched_nodes(autoscaled.launches())
    assert launched == {"cpu_worker": 2}, launched  # 2 1-CPU tasks at once (--workers 2): 2 CPU nodes, no GPU node
    manifest = read_manifest(resolve(f"{store}/datasets/builtin"))
    assert manifest.shards and all(record.rows for record in manifest.shards)


def test_idle_worker_nodes_go_away_after_the_idle_timeout(autoscaled: LocalCluster, store: str) -> None:
    assert autoscaled.launches()  # the prepare's nodes were there
    _scaled_to_zero(autoscaled)


def test_plan_predicts_the_nodes_the_autoscaler_launches_for_distill(autoscaled: LocalCluster, store: str) -> None:
    _scaled_to_zero(autoscaled)
    before = len(autoscaled.launches())
    plan = _ok(autoscaled.run(["raydd.distill", "--store", store, *DISTILL, "--plan"], timeout=RUN_S))
    (predicted,) = re.findall(r"the autoscaler launches ([^;\n]+)", plan)
    assert predicted == "2 x cpu_worker", plan
    assert len(autoscaled.launches()) == before  # planning launched nothing
    log_before = len(autoscaled.autoscaler_log())
    _ok(autoscaled.run(["raydd.distill", "--store", store, *DISTILL], timeout=RUN_S))
    log = autoscaled.autoscaler_log()[log_before:]
    launches = autoscaled.launches()[before:]
    assert launches and launches[0] == (2, "cpu_worker"), (launches, log)  # the run's first launch: the plan's nodes
    assert set(launched_nodes(launches)) == {"cpu_worker"}, (launches, log)  # no other type, ever
    held = ", ".join(f"{count} x {name}" for name, count in sorted(peak_worker_nodes(log).items()))
    assert held == predicted, (launches, log)  # the most nodes it held at once for the run, as the plan said
    assert len(list_names(resolve(f"{store}/distilled/builtin"))) == 1
    _scaled_to_zero(autoscaled)


def test_plan_refuses_in_one_line_what_no_node_type_can_hold(autoscaled: LocalCluster, tmp_path: Path) -> None:
    too_big = ["raydd.distill", "--dataset", "k400", "--store", str(tmp_path / "store"), "--plan", "--workers", "2"]
    refused = autoscaled.run([*too_big, "--cpus-per-worker", "2"], timeout=RUN_S)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert "{CPU: 2}" in lines[0] and "cpu_worker" in lines[0], lines[0]  # names the request and the node types
    assert not (tmp_path / "store").exists()
