"""raydd on a real multi-node Ray cluster on this machine (:mod:`benchmarks.multinode`): a head with no CPUs for
tasks and 1-CPU worker nodes, each with its own cache, HOME and temp dir, sharing nothing but the S3 store (moto)
and Ray. Every S3 request is counted per node (each node's endpoint is a counting proxy of its own).

The cluster is shared by the module; a test that removes a node adds a replacement, so the next test finds two
worker nodes again. The commands run as drivers on the head, as ``ray job submit`` would run them.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import s3fs
from mlflow import MlflowClient

from benchmarks.multinode import (
    Background,
    LocalCluster,
    completed_writes,
    copy_datasets,
    dataset_shards,
    gets_by_node,
    local_cluster,
    registered_checkpoint,
    stored_objects,
)
from raydd.storage import list_names, read_manifest, resolve

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a multi-node Ray cluster of its own

SMALL = ["--frames", "4", "--height", "16", "--width", "16", "--shard-mb", "0.05"]
DM = ["--method", "dm", "--ipc", "1", "--network-width", "8", "--batch-real", "4", "--eval-runs", "0"]
TWO_WORKERS = ["--workers", "2", "--cpus-per-worker", "1"]
RUN_S = 600


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    port = urlparse(s3_endpoint).port
    with local_cluster(tmp_path_factory.mktemp("nodes"), workers=2, s3_port=port) as started:
        yield started


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-4000:])
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def prepared(cluster: LocalCluster, s3_endpoint: str) -> str:
    """The built-in dataset prepared by the cluster's nodes into a bucket (small shards: several per split)."""
    bucket = "raydd-multinode"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir(bucket)
    store = f"s3://{bucket}/prepared"
    _ok(cluster.run(["raydd.prepare", "--store", store, *SMALL], timeout=RUN_S))
    return store


def _copy_store(source: str, target: str, s3_endpoint: str) -> str:
    return copy_datasets(s3fs.S3FileSystem(endpoint_url=s3_endpoint), source, target)


def test_two_workers_run_on_two_nodes_and_each_node_fetches_each_shard_once(
    cluster: LocalCluster, prepared: str, s3_endpoint: str
) -> None:
    store = _copy_store(prepared, "s3://raydd-multinode/placement", s3_endpoint)
    before = {name: node.shard_gets() for name, node in cluster.nodes.items()}
    assert not any(before[name] for name in before if name != "head")  # prepare read no shard back
    distill = ["raydd.distill", "--store", store, *DM, "--paradigm", "static-dynamic", *TWO_WORKERS]
    distill += ["--iterations", "4", "--checkpoint-every", "2", "--max-failures", "1"]
    tracking = f"sqlite:///{cluster.root / 'head' / 'placement-mlflow.db'}"
    output = _ok(cluster.run(distill, timeout=RUN_S, RAYDD_FAULTS="fail_at_iteration=2", MLFLOW_TRACKING_URI=tracking))
    assert "resuming at iteration 2" in output  # stage 2's group restarted from its checkpoint
    # Piped: no colour codes, no Ray dedup lines, none of Ray Train's per-report lines, each line once.
    assert "\x1b[" not in output and "repeated" not in output and "Reporting training result" not in output
    resumes = [line for line in output.splitlines() if "resuming at iteration" in line]
    assert len(resumes) == len(set(resumes)), resumes  # each node forwards only its own workers' lines
    # Rank 0 runs on a worker node, which cannot reach the driver's SQLite file: the driver sends the curves.
    assert "is on the driver's machine, not on this worker's node" in output
    client = MlflowClient(tracking_uri=tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("raydd-distill").experiment_id])
    curves = [key for key in run.data.metrics if key.endswith("/loss")]
    assert len(curves) == 2 and all(len(client.get_metric_history(run.info.run_id, key)) == 4 for key in curves)
    shards = dataset_shards(store)
    gets = gets_by_node(cluster, store)
    workers = [name for name in gets if name != "head"]
    assert len(workers) == 2 and all(gets[name] for name in workers), gets  # both nodes read: one worker on each
    for name in gets:
        assert set(gets[name]) <= set(shards) and all(count == 1 for count in gets[name].values()), (name, gets)
    # A restart of the whole command and an evaluation afterwards fetch nothing more.
    _ok(cluster.run(distill, timeout=RUN_S))
    (distilled,) = list_names(resolve(f"{store}/distilled/builtin"))
    _ok(
        cluster.run(
            ["raydd.evaluate", "--data", f"{store}/distilled/builtin/{distilled}", "--runs", "2", "--epochs", "1"],
            timeout=RUN_S,
        )
    )
    after = gets_by_node(cluster, store)
    for name in after:
        assert all(count == 1 for count in after[name].values()), (name, after)
    assert sum(len(after[name]) for name in workers) >= len(shards)  # every shard was read by some node


def test_a_lost_node_mid_stage_costs_only_the_work_since_the_last_checkpoint(
    cluster: LocalCluster, prepared: str, s3_endpoint: str, tmp_path: Path
) -> None:
    import torch

    from raydd.distilled_set import load_distilled

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    distill = [*DM, "--paradigm", "naive", *TWO_WORKERS, "--iterations", "60", "--checkpoint-every", "5"]
    distill += ["--lr-img", "1000"]
    reference = _copy_store(prepared, "s3://raydd-multinode/undisturbed", s3_endpoint)
    _ok(cluster.run(["raydd.distill", "--store", reference, *distill], timeout=RUN_S))
    store = _copy_store(prepared, "s3://raydd-multinode/node-lost", s3_endpoint)
    run = Background(cluster, ["raydd.distill", "--store", store, *distill, "--max-failures", "1"], tmp_path / "log")
    run.wait_for(lambda: registered_checkpoint(fs, store), "the first checkpoint Ray Train registered")
    cluster.replace_a_worker_node()
    output = run.finish()
    resumed = [int(m) for m in re.findall(r"resuming at iteration (\d+)/60", output)]
    assert resumed and 0 < resumed[0] < 60, output[-3000:]
    (ours,) = list_names(resolve(f"{store}/distilled/builtin"))
    (theirs,) = list_names(resolve(f"{reference}/distilled/builtin"))
    lost = load_distilled(f"{store}/distilled/builtin/{ours}").videos_NCTHW
    undisturbed = load_distilled(f"{reference}/distilled/builtin/{theirs}").videos_NCTHW
    assert torch.equal(lost, undisturbed)  # bitwise
    # --plan reads a cluster that has lost a node (the State API counts dead nodes: it once refused to answer).
    plan = _ok(cluster.run(["raydd.distill", "--store", store, *distill, "--plan"], timeout=RUN_S))
    assert "2 x {CPU: 1} Ray Train workers (all at once)" in plan and "fits the Ray cluster at" in plan, plan


def test_a_lost_node_costs_the_experts_job_only_its_unfinished_trajectories(
    cluster: LocalCluster, prepared: str, s3_endpoint: str, tmp_path: Path
) -> None:
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    store = _copy_store(prepared, "s3://raydd-multinode/experts", s3_endpoint)
    experts = ["raydd.experts", "--store", store, "--model", "convnet", "--width", "16", "--epochs", "3"]
    experts += ["--num-experts", "6", "--batch-size", "16"]
    run = Background(cluster, experts, tmp_path / "log")
    shards = f"{store.removeprefix('s3://')}/experts/builtin/convnet/*.arrow"
    finished = run.wait_for(lambda: stored_objects(fs, shards), "the first finished trajectory")
    cluster.replace_a_worker_node()
    output = run.finish()
    manifest = read_manifest(resolve(f"{store}/experts/builtin/convnet"))
    assert len(manifest.shards) == 6, output[-3000:]
    after = stored_objects(fs, shards)
    assert len(after) == 6
    assert all(after[path] == etag for path, etag in finished.items())  # none trained or written again
    prefix = "/" + store.removeprefix("s3://") + "/experts/builtin/convnet/"
    requests = [line for node in [*cluster.nodes.values(), *cluster.removed] for line in node.proxy.requests]
    writes = completed_writes(requests, prefix)
    trajectories = {path: count for path, count in writes.items() if path.endswith(".arrow")}
    assert len(trajectories) == 6 and set(trajectories.values()) == {1}, writes  # each trained and written once


def test_a_lost_node_mid_prepare_loses_and_duplicates_no_shard(
    cluster: LocalCluster, prepared: str, s3_endpoint: str, tmp_path: Path
) -> None:
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    store = "s3://raydd-multinode/prepare-node-lost"
    prepare = ["raydd.prepare", "--store", store, "--shard-mb", "0.05", "--workers", "2"]
    reference = _ok(cluster.run(["raydd.prepare", "--store", "s3://raydd-multinode/prepare-ref", *prepare[3:]]))
    run = Background(cluster, prepare, tmp_path / "log")
    run.wait_for(
        lambda: stored_objects(fs, f"{store.removeprefix('s3://')}/datasets/builtin/*.arrow"), "the first shard"
    )
    cluster.replace_a_worker_node()
    run.finish()
    ours = read_manifest(resolve(f"{store}/datasets/builtin"))
    theirs = read_manifest(resolve("s3://raydd-multinode/prepare-ref/datasets/builtin"))
    assert [(r.name, r.rows, r.sha256) for r in ours.shards] == [(r.name, r.rows, r.sha256) for r in theirs.shards]
    stored = stored_objects(fs, f"{store.removeprefix('s3://')}/datasets/builtin/*.arrow")
    assert sorted(p.rsplit("/", 1)[-1] for p in stored) == sorted(r.name for r in ours.shards), reference[-500:]


def _nothing_left_behind(cluster: LocalCluster, within_s: float = 120) -> None:
    """Wait until no node holds a worker of a finished or killed command (Ray reaps a dead job's workers)."""
    cluster.wait_on_head(
        lambda: not any(cluster.left_behind().values()),
        within_s=within_s,
        what="every node free of left-over workers",
        detail=lambda: f"left behind: {cluster.left_behind()}",
    )


def _finished_trial_saved(fs: s3fs.S3FileSystem, sweep: str) -> bool:
    """Whether the sweep's experiment state in the bucket records a trial as finished."""
    fs.invalidate_cache()
    return any(b"TERMINATED" in fs.cat_file(path) for path in fs.glob(f"{sweep}/*/experiment_state*.json"))


def test_a_sweep_runs_trials_on_several_nodes_and_resumes_after_its_driver_is_killed(
    cluster: LocalCluster, prepared: str, s3_endpoint: str, tmp_path: Path
) -> None:
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    store = _copy_store(prepared, "s3://raydd-multinode/tune", s3_endpoint)
    tracking = f"sqlite:///{cluster.root / 'head' / 'tune-mlflow.db'}"
    tune = ["raydd.tune", "--store", store, "--iterations", "3", "--grace-period", "3", "--num-samples", "6"]
    tune += ["--max-concurrent", "2", "--cpus-per-trial", "1", "--eval-epochs", "2", "--network-width", "8"]
    gets_before = gets_by_node(cluster, store)
    run = Background(cluster, tune, tmp_path / "first.log", MLFLOW_TRACKING_URI=tracking)
    sweep = f"{store.removeprefix('s3://')}/tune"
    run.wait_for(lambda: _finished_trial_saved(fs, sweep), "Tune's state in the bucket with a finished trial")
    run.process.send_signal(signal.SIGKILL)  # no handler runs
    run.process.wait(timeout=60)
    _nothing_left_behind(cluster)
    resumed = _ok(cluster.run(tune, timeout=RUN_S, MLFLOW_TRACKING_URI=tracking))
    assert "resuming the sweep" in resumed
    # Every trial finished once, its result kept: those done before the kill from Tune's state in the bucket.
    table = resumed[resumed.rindex("val top-1") :]
    assert len(re.findall(r"^ +[0-9a-f]{8} .* DONE$", table, flags=re.M)) == 6, table
    gets = gets_by_node(cluster, store)
    assert sum(1 for name in gets if name != "head" and len(gets[name]) > len(gets_before.get(name, {}))) >= 1
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("raydd-tune")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "raydd.trial_id" in r.data.tags]
    assert len({r.data.tags["raydd.trial_id"] for r in children}) == 6 == len(children)
    assert all(r.info.status == "FINISHED" for r in children)
    _nothing_left_behind(cluster)
