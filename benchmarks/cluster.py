"""Benchmark cluster (issue 24): raydd on a real multi-node Ray cluster on this machine (:mod:`benchmarks.multinode`).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/cluster.py --quick     # < 15 min on 2 cores
    PYTHONPATH=$PWD .venv/bin/python benchmarks/cluster.py             # longer runs, every node loss

A head with no CPUs for tasks and two 1-CPU worker nodes, each with its own cache, HOME and temp dir, sharing
nothing but an S3 store (moto, started here) and Ray; every S3 request is counted per node at a proxy of its own.
The commands run as drivers on the head, as ``ray job submit`` runs them. Sections:

placement   ``raydd.distill --workers 2`` (DM static-dynamic, both stages), a restart of it and a ``raydd.evaluate``:
            GET requests per shard per node (``s3_gets_per_shard_per_node``, target 1.0: each node's cache
            fetches each shard it reads once, and nothing after).
node_loss   a worker node killed whole mid-stage (its raylet and every process on it), and a replacement added:
            in distill after its first checkpoint (the distilled set against an undisturbed run's, video by
            video), and without --quick also in experts after the first finished trajectory and in prepare after
            the first shard. ``node_loss_rows_lost``: synthetic videos that differ, finished trajectories written
            again or missing, prepared rows missing or duplicated. ``node_loss_recovery_s``: from the kill to the
            end of the first iteration after Ray Train's resume (its progress line).
orphans     after every command, and after a driver SIGKILLed mid-distill, the Ray workers left on any node once
            Ray has had 60 s to reap them (``orphan_processes``, target 0).
autoscaler  a head alone with Ray's autoscaler and fake multi-node provider, its config derived from
            ``cluster.yaml``: ``raydd.prepare --workers 2`` from zero nodes, scale-down to zero after the idle
            timeout, then ``raydd.distill --workers 2 --plan`` and the run: ``plan_nodes_predicted`` against
            ``autoscaler_nodes_held_at_once`` (the most nodes of each type in any status report during the run),
            beside ``autoscaler_nodes_launched`` (every launch logged during the run: more than held at once when
            the 6 s idle timeout let nodes go between two attempts of Ray Train's worker group) and the
            autoscaler's status before each of its launch decisions.
scaling     seconds per DM iteration at ``benchmarks/scale.py``'s K400 shape, 1 worker on 1 node against 2 workers
            on 2 nodes (1 CPU each): ``strong_scaling_2_nodes`` (target >= 1.6).

Prints a table and writes benchmarks/results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.multinode import (  # noqa: E402
    Background,
    LocalCluster,
    autoscaling_cluster,
    completed_writes,
    copy_datasets,
    dataset_shards,
    gets_by_node,
    launched_nodes,
    local_cluster,
    peak_worker_nodes,
    registered_checkpoint,
    stored_objects,
)
from benchmarks.scale import judge as scale_judge  # noqa: E402
from benchmarks.scale import moto_server, write_k400_like, write_results  # noqa: E402
from raydd.storage import list_names, read_manifest, resolve  # noqa: E402

BUCKET = "raydd-cluster"
SMALL = ["--frames", "4", "--height", "16", "--width", "16", "--shard-mb", "0.05"]
DM = ["--method", "dm", "--ipc", "1", "--network-width", "8", "--batch-real", "4", "--eval-runs", "0"]
TWO_WORKERS = ["--workers", "2", "--cpus-per-worker", "1"]
REAP_S = 60  # how long Ray may take to reap a finished command's workers before they count as orphans
TARGETS = {
    "s3_gets_per_shard_per_node": ("==", 1.0),
    "node_loss_rows_lost": ("==", 0),
    "orphan_processes": ("==", 0),
    "strong_scaling_2_nodes": (">=", 1.6),
}


def _ok(result: subprocess.CompletedProcess, what: str) -> str:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def _orphans(cluster: LocalCluster, found: list[dict[str, Any]], after: str) -> None:
    """Give Ray up to :data:`REAP_S` to free every node of a finished command's workers; note what is left then."""
    found.append({"after": after, "left": cluster.left_after(REAP_S)})


class _Stopwatch:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.started, 1)


# ---- sections ---------------------------------------------------------------------------------------------------


def placement(cluster: LocalCluster, fs: Any, prepared: str, orphans: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: ANN401
    store = copy_datasets(fs, prepared, f"s3://{BUCKET}/placement")
    distill = ["raydd.distill", "--store", store, *DM, "--paradigm", "static-dynamic", *TWO_WORKERS]
    distill += ["--iterations", "4", "--checkpoint-every", "2"]
    watch = _Stopwatch()
    _ok(cluster.run(distill, timeout=900), "distill")
    _orphans(cluster, orphans, "distill --workers 2")
    first = gets_by_node(cluster, store)
    _ok(cluster.run(distill, timeout=900), "distill's restart")
    (name,) = list_names(resolve(f"{store}/distilled/builtin"))
    evaluate = ["raydd.evaluate", "--data", f"{store}/distilled/builtin/{name}", "--runs", "1", "--epochs", "1"]
    _ok(cluster.run(evaluate, timeout=900), "evaluate")
    _orphans(cluster, orphans, "distill's restart and evaluate")
    gets = gets_by_node(cluster, store)
    pairs = [count for node in gets.values() for count in node.values()]
    return {
        "nodes": len(cluster.nodes),
        "worker_nodes_reading": sum(1 for name, node in gets.items() if name != "head" and node),
        "shards": len(dataset_shards(store)),
        "s3_gets_per_shard_per_node": sum(pairs) / len(pairs) if pairs else None,
        "s3_gets_max_per_shard_per_node": max(pairs, default=None),
        "s3_gets_after_restart_and_evaluate": sum(pairs) - sum(c for node in first.values() for c in node.values()),
        "placement_s": watch(),
    }


def _recovery_s(run: Background, killed_at: float, stage: str, iterations: int) -> tuple[int, float]:
    """The iteration Ray Train resumed at, and seconds from the kill to the end of the first iteration after it
    (its progress line in the driver's log, which the progress board prints for that iteration)."""

    def resumed_and_iterated() -> tuple[int, float] | None:
        text = run.output()
        resumed = re.search(rf"\[{stage}\] resuming at iteration (\d+)/{iterations}", text)
        if not resumed:
            return None
        start = int(resumed.group(1))
        line = re.compile(rf"\[{stage}\] \[[#-]+\] +\d+% {start + 1}/{iterations} ")
        return (start, time.monotonic() - killed_at) if line.search(text, resumed.end()) else None

    return run.wait_for(resumed_and_iterated, "the first iteration after the resume")


def node_loss(
    cluster: LocalCluster,
    fs: Any,  # noqa: ANN401
    prepared: str,
    work: Path,
    quick: bool,
    orphans: list[dict[str, Any]],
) -> dict[str, Any]:
    import torch

    from raydd.distilled_set import load_distilled

    losses: list[dict[str, Any]] = []
    iterations = 60 if quick else 100  # at ~0.1 s an iteration: the kill lands mid-stage
    distill = [*DM, "--paradigm", "naive", *TWO_WORKERS, "--iterations", str(iterations), "--checkpoint-every", "5"]
    distill += ["--lr-img", "1000"]
    reference = copy_datasets(fs, prepared, f"s3://{BUCKET}/undisturbed")
    _ok(cluster.run(["raydd.distill", "--store", reference, *distill], timeout=900), "the undisturbed distill")
    store = copy_datasets(fs, prepared, f"s3://{BUCKET}/node-lost")
    run = Background(cluster, ["raydd.distill", "--store", store, *distill, "--max-failures", "1"], work / "d.log")
    run.wait_for(
        lambda: registered_checkpoint(fs, store),
        "the first checkpoint",
    )
    killed_at = cluster.replace_a_worker_node()
    resumed_at, recovery = _recovery_s(run, killed_at, "naive", iterations)
    run.process.wait(timeout=900)
    row: dict[str, Any] = {"stage": "distill", "exit": run.process.returncode, "resumed_at": resumed_at}
    if run.process.returncode == 0:
        (ours,) = list_names(resolve(f"{store}/distilled/builtin"))
        (theirs,) = list_names(resolve(f"{reference}/distilled/builtin"))
        lost = load_distilled(f"{store}/distilled/builtin/{ours}").videos_NCTHW
        undisturbed = load_distilled(f"{reference}/distilled/builtin/{theirs}").videos_NCTHW
        row["rows_lost"] = sum(not torch.equal(a, b) for a, b in zip(lost, undisturbed, strict=True))
    row |= {"survived": run.process.returncode == 0 and row.get("rows_lost") == 0, "recovery_s": round(recovery, 1)}
    losses.append(row)
    _orphans(cluster, orphans, "distill with a node lost")
    if not quick:
        losses.append(_experts_loss(cluster, fs, prepared, work))
        _orphans(cluster, orphans, "experts with a node lost")
        losses.append(_prepare_loss(cluster, fs, work))
        _orphans(cluster, orphans, "prepare with a node lost")
    return {
        "node_losses": losses,
        "node_loss_injected": len(losses),
        "node_loss_survived": sum(bool(r["survived"]) for r in losses),
        "node_loss_rows_lost": sum(r.get("rows_lost", 0) for r in losses),
        "node_loss_recovery_s": row["recovery_s"],
    }


def _experts_loss(cluster: LocalCluster, fs: Any, prepared: str, work: Path) -> dict[str, Any]:  # noqa: ANN401
    store = copy_datasets(fs, prepared, f"s3://{BUCKET}/experts")
    experts = ["raydd.experts", "--store", store, "--model", "convnet", "--width", "16", "--epochs", "3"]
    experts += ["--num-experts", "6", "--batch-size", "16"]
    run = Background(cluster, experts, work / "e.log")
    pattern = f"{store.removeprefix('s3://')}/experts/builtin/convnet/*.arrow"
    finished = run.wait_for(lambda: stored_objects(fs, pattern), "the first finished trajectory")
    cluster.replace_a_worker_node()
    run.process.wait(timeout=900)
    after = stored_objects(fs, pattern)
    requests = [line for node in [*cluster.nodes.values(), *cluster.removed] for line in node.proxy.requests]
    prefix = "/" + store.removeprefix("s3://") + "/experts/builtin/convnet/"
    writes = {p: c for p, c in completed_writes(requests, prefix).items() if p.endswith(".arrow")}
    rewritten = sum(after.get(path) != etag for path, etag in finished.items())
    lost = rewritten + max(0, 6 - len(after)) + sum(count - 1 for count in writes.values())
    return {"stage": "experts", "exit": run.process.returncode, "rows_lost": lost, "survived": lost == 0}


def _prepare_loss(cluster: LocalCluster, fs: Any, work: Path) -> dict[str, Any]:  # noqa: ANN401
    store, reference = f"s3://{BUCKET}/prepare-node-lost", f"s3://{BUCKET}/prepare-ref"
    prepare = ["--shard-mb", "0.05", "--workers", "2"]
    _ok(cluster.run(["raydd.prepare", "--store", reference, *prepare], timeout=900), "the undisturbed prepare")
    run = Background(cluster, ["raydd.prepare", "--store", store, *prepare], work / "p.log")
    pattern = f"{store.removeprefix('s3://')}/datasets/builtin/*.arrow"
    run.wait_for(lambda: stored_objects(fs, pattern), "the first shard")
    cluster.replace_a_worker_node()
    run.process.wait(timeout=900)
    theirs = {(r.name, r.sha256): r.rows for r in read_manifest(resolve(f"{reference}/datasets/builtin")).shards}
    ours = {(r.name, r.sha256): r.rows for r in read_manifest(resolve(f"{store}/datasets/builtin")).shards}
    stored = {p.rsplit("/", 1)[-1] for p in stored_objects(fs, pattern)}
    missing = sum(rows for key, rows in theirs.items() if key not in ours)
    extra = sum(rows for key, rows in ours.items() if key not in theirs) + len(stored - {n for n, _ in ours})
    return {
        "stage": "prepare",
        "exit": run.process.returncode,
        "rows_lost": missing + extra,
        "survived": not missing + extra,
    }


def killed_driver(cluster: LocalCluster, fs: Any, prepared: str, work: Path, orphans: list[dict[str, Any]]) -> None:  # noqa: ANN401
    store = copy_datasets(fs, prepared, f"s3://{BUCKET}/driver-killed")
    distill = ["raydd.distill", "--store", store, *DM, "--paradigm", "naive", *TWO_WORKERS]
    run = Background(cluster, [*distill, "--iterations", "40", "--checkpoint-every", "5"], work / "k.log")
    run.wait_for(
        lambda: registered_checkpoint(fs, store),
        "the first checkpoint",
    )
    run.process.send_signal(signal.SIGKILL)
    run.process.wait(timeout=60)
    _orphans(cluster, orphans, "distill's driver SIGKILLed")


def autoscaler(work: Path) -> dict[str, Any]:
    with autoscaling_cluster(work / "autoscaled", idle_timeout_minutes=0.1) as cluster:
        store = str(cluster.root / "store")
        _ok(cluster.run(["raydd.prepare", "--store", store, *SMALL, "--workers", "2"], timeout=900), "prepare")
        prepare_launched = launched_nodes(cluster.launches())
        watch = _Stopwatch()
        cluster.wait_on_head(lambda: cluster.worker_nodes_alive() == 0, within_s=300, what="scale-down to zero")
        scaled_down_s = watch()
        distill = ["raydd.distill", "--store", store, *DM, "--paradigm", "naive", *TWO_WORKERS, "--iterations", "4"]
        before = len(cluster.launches())
        plan = _ok(cluster.run([*distill, "--plan"], timeout=900), "distill --plan")
        predicted = re.findall(r"the autoscaler launches ([^;\n]+)", plan)
        log_before = len(cluster.autoscaler_log())
        _ok(cluster.run(distill, timeout=900), "distill")
        launches = cluster.launches()[before:]
        decisions = _decisions(cluster.autoscaler_log()[log_before:])
        held = peak_worker_nodes(cluster.autoscaler_log()[log_before:])
    launched = launched_nodes(launches)
    return {
        "autoscaler_prepare_launched": prepare_launched,
        "autoscaler_scaled_to_zero_s": scaled_down_s,
        "plan_nodes_predicted": predicted[0] if predicted else None,
        "autoscaler_nodes_held_at_once": ", ".join(f"{c} x {n}" for n, c in sorted(held.items())) or "none",
        "autoscaler_nodes_launched": ", ".join(f"{c} x {n}" for n, c in sorted(launched.items())) or "none",
        "autoscaler_first_launch": f"{launches[0][0]} x {launches[0][1]}" if launches else "none",
        "autoscaler_launches": launches,
        "autoscaler_status_before_each_launch_decision": decisions,
    }


def _decisions(log: str) -> list[str]:
    """The autoscaler's status (nodes, usage, demands) before each of its decisions to launch nodes, and the
    decision: what it saw when it launched."""
    found = []
    for decision in re.finditer(r"^.*Queue \d+ new nodes for launch.*$", log, flags=re.M):
        start = log.rfind("Autoscaler status", 0, decision.start())
        block = log[start : decision.end()] if start >= 0 else decision.group(0)
        found.append("\n".join(line for line in block.splitlines() if line.strip() and "---" not in line))
    return found


def scaling(cluster: LocalCluster, work: Path, quick: bool) -> dict[str, Any]:
    dataset = write_k400_like(str(work / "k400-store"), 10)
    warmup, timed = (1, 4) if quick else (2, 8)
    seconds = {}
    for workers in (1, 2):
        driver = ["benchmarks.cluster", "--scaling-driver", dataset, str(workers), str(warmup + timed)]
        output = _ok(cluster.run(driver, timeout=1200), f"the scaling driver, {workers} worker(s)")
        history = json.loads(output.strip().splitlines()[-1])
        seconds[workers] = history[warmup:]
        print(f"  scaling: {workers} worker(s), median {statistics.median(seconds[workers]):.2f} s/it", file=sys.stderr)
    return {
        "strong_scaling_2_nodes": statistics.median(seconds[1]) / statistics.median(seconds[2]),
        "seconds_1_worker_1_node": seconds[1],
        "seconds_2_workers_2_nodes": seconds[2],
    }


def scaling_driver(dataset: str, workers: int, iterations: int) -> None:
    """Run as a driver on the cluster: one timed DM fit (``benchmarks/scale.py``'s), its seconds per iteration."""
    import ray

    from benchmarks.scale import fit

    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, configure_logging=False)
    runs = Path(tempfile.mkdtemp(prefix="raydd-cluster-runs-"))
    try:
        history = fit(dataset, workers, iterations, runs, f"scaling-{workers}")["history"]
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    print(json.dumps(history["seconds"]))


# ---- report -----------------------------------------------------------------------------------------------------


def judge(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = scale_judge(results, TARGETS)
    if "node_loss_injected" in results:
        injected, survived = results["node_loss_injected"], results["node_loss_survived"]
        rows.append(
            (
                "node_loss_survived",
                f"{survived}/{injected}",
                f"{injected}/{injected}",
                "PASS" if survived == injected else "FAIL",
            )
        )
        rows.append(("node_loss_recovery_s", str(results["node_loss_recovery_s"]), "-", "measured"))
    if "plan_nodes_predicted" in results:
        predicted, held = results["plan_nodes_predicted"], results["autoscaler_nodes_held_at_once"]
        rows.append(("autoscaler_nodes_held_at_once", held, f"= {predicted}", "PASS" if held == predicted else "FAIL"))
        rows.append(("autoscaler_nodes_launched", results["autoscaler_nodes_launched"], "-", "measured"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, the distill node loss only (< 15 min)")
    parser.add_argument("--sections", default="placement,node_loss,orphans,autoscaler,scaling", help="comma-separated")
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given (default: a temporary folder)")
    parser.add_argument(
        "--scaling-driver", nargs=3, metavar=("DATASET", "WORKERS", "ITERATIONS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.scaling_driver:
        dataset, workers, iterations = args.scaling_driver
        scaling_driver(dataset, int(workers), int(iterations))
        return
    sections = args.sections.split(",")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="raydd-bench-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"quick": args.quick, "machine": platform.processor() or platform.machine()}
    results |= {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()}
    watch = _Stopwatch()
    orphans: list[dict[str, Any]] = []
    aws = {"AWS_ACCESS_KEY_ID": "cluster", "AWS_SECRET_ACCESS_KEY": "cluster", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(aws)
    errors: dict[str, str] = {}

    def section(name: str, measure: Any, *arguments: Any) -> None:  # noqa: ANN401
        """Run one section into ``results``; a failure is recorded and the other sections still run."""
        try:
            results.update(measure(*arguments) or {})
        except Exception as error:  # noqa: BLE001 - reported in the table and the JSON, not lost
            errors[name] = f"{type(error).__name__}: {error}"[:2000]
            print(f"{name} failed: {errors[name][:500]}", file=sys.stderr)

    try:
        if {"placement", "node_loss", "orphans", "scaling"} & set(sections):
            import s3fs

            with moto_server() as port, local_cluster(work / "nodes", workers=2, s3_port=port) as cluster:
                os.environ["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{port}"  # this script's own reads
                fs = s3fs.S3FileSystem(endpoint_url=f"http://127.0.0.1:{port}")
                fs.mkdir(BUCKET)
                prepared = f"s3://{BUCKET}/prepared"
                _ok(cluster.run(["raydd.prepare", "--store", prepared, *SMALL], timeout=900), "prepare")
                _orphans(cluster, orphans, "prepare")
                if "placement" in sections:
                    section("placement", placement, cluster, fs, prepared, orphans)
                if "node_loss" in sections:
                    section("node_loss", node_loss, cluster, fs, prepared, work, args.quick, orphans)
                if "orphans" in sections:
                    section("orphans", killed_driver, cluster, fs, prepared, work, orphans)
                if "scaling" in sections:
                    section("scaling", scaling, cluster, work, args.quick)
                results["nodes"] = len(cluster.nodes)
        if "autoscaler" in sections:
            section("autoscaler", autoscaler, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["errors"] = errors
    results["orphan_checks"] = orphans
    results["orphan_processes"] = sum(len(titles) for check in orphans for titles in check["left"].values())
    results["wall_s"] = watch()
    results["load_average_after"] = os.getloadavg()
    for name, error in errors.items():
        print(f"{name}: FAILED: {error.splitlines()[0]}", file=sys.stderr)
    write_results("cluster", results, judge(results), widths=(36, 16, 16))


if __name__ == "__main__":
    main()
