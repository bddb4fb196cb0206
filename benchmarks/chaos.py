"""Benchmark chaos (issue 15): faults injected at random (seeded) points across prepare -> experts -> distill on the
built-in dataset, on the local store and on moto's S3 server, every output compared with an undisturbed run.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/chaos.py --quick     # < 10 min on 2 idle cores
    PYTHONPATH=$PWD .venv/bin/python benchmarks/chaos.py             # every fault at every stage
    PYTHONPATH=$PWD .venv/bin/python benchmarks/chaos.py --quick --stores local --faults train_worker_kill

The commands run as a user runs them, ``python -m raydd.prepare`` / ``raydd.experts`` / ``raydd.distill`` as
subprocesses (small settings: 2 experts of 3 epochs, MTT naive with 2 Ray Train workers). They join a Ray head
the script starts for each store (``--own-ray``: each command starts its own local Ray, as by default); a driver
to be killed always starts its own, the case where a killed driver can leave Ray processes behind. First the
undisturbed run (fixed seeds) on each store; then each fault in a fresh store holding the undisturbed run's
outputs of the stages before it, with a fresh node cache:

train_worker_kill   SIGKILL of a Ray Train worker (``ray::RayTrainWorker``) 0-1 s after rank 0 reported a random
                    one of distill's checkpoints but the last. Survived: the command completes by itself (Ray
                    Train restarts the worker group from the last checkpoint).
expert_worker_kill  SIGKILL of the worker running an expert task. Survived: the command completes by itself.
driver_kill         SIGKILL of the command's own process at a random point of a stage's work, then the same
                    command again. Survived: the re-run completes.
shard_truncated     a random train shard of the prepared dataset cut to a random length on storage; then experts
                    (a reader) and prepare again. Right: the reader refuses in one line naming the shard (it cannot
                    make the shard), and prepare, which can, detects it and writes it again. Survived: prepare's
                    re-run restores every row, and the reader either refused in one line or read nothing bad.
s3_outage           (S3 only) the S3 endpoint goes away for 3-6 s at a random write request of a stage, then
                    comes back (a TCP forwarder in front of moto resets every connection and refuses new ones;
                    moto keeps objects in memory, so stopping its process would lose the store). Survived: the
                    command completes by itself, or fails in one clear line and the same command again completes.

node_loss           (S3 only) the stage runs on a multi-node cluster of its own (:mod:`benchmarks.multinode`: a
                    head with no CPUs for tasks and two 1-CPU worker nodes with caches of their own); once the
                    stage's work runs on a worker node (distill: after its first checkpoint in the store), that
                    node is killed whole (its raylet and every process on it) and a replacement added. Survived:
                    the command completes by itself. Orphans: Ray workers left on any node of that cluster.

A fault survives only if, in the end, every output equals the undisturbed run's: the prepared dataset's rows, the
experts' trajectory epochs and the distilled set's synthetic tensors, row by row (``records_lost``: rows missing,
unreadable or differing; floats within rtol 1e-5, atol 1e-7, which a resumed run may legitimately need: the
JSON says how many rows were bitwise equal and the largest difference). ``orphan_processes``: Ray or raydd
processes started by this script (a ``$RAYDD_CHAOS`` marker in their environment, or noted as descendants of the
commands and heads it started; never found by name: other people's Ray clusters run on the same machine) still
alive 5 s after a scenario's last command ended, or after the script stopped its Ray head; they are timed until
they exit (at most 90 s) and then killed. Prints a table and writes benchmarks/results/chaos.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.chaos_tools import (  # noqa: E402
    MARK_VARIABLE,
    Comparison,
    Lineage,
    OutageProxy,
    ProcessWatch,
    batch_rows,
    compare_rows,
    kill_all,
    ours,
    ray_or_raydd,
)
from benchmarks.scale import moto_server  # noqa: E402
from raydd.ports import free_port  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("prepare", "experts", "distill")
OUTPUT_FOLDERS = {"prepare": "datasets", "experts": "experts", "distill": "distilled"}
WORK_TITLE = {"prepare": "write_shard", "experts": "run_expert", "distill": "RayTrainWorker"}
RTOL, ATOL = 1e-5, 1e-7
CHECKPOINT_EVERY = 5
SETTLE_S, LINGER_LIMIT_S = 5.0, 90.0
BUCKET = "chaos"
SETTINGS_HASH = re.compile(r"-[0-9a-f]{10}$")


def stage_args(stage: str, store: str, iterations: int) -> list[str]:
    common = ["--store", store, "--seed", "0"]
    if stage == "prepare":
        return ["--dataset", "builtin", "--shard-mb", "2", *common]
    if stage == "experts":
        return [*common, "--num-experts", "2", "--epochs", "3", "--width", "8", "--batch-size", "64"] + [
            "--device",
            "cpu",
            "--cpus-per-expert",
            "1",
            "--workers",
            "2",
        ]
    return [*common, "--method", "mtt", "--paradigm", "naive", "--ipc", "1", "--device", "cpu"] + [
        "--iterations",
        str(iterations),
        "--checkpoint-every",
        str(CHECKPOINT_EVERY),
        "--workers",
        "2",
        "--cpus-per-worker",
        "1",
        "--max-failures",
        "2",
        "--eval-runs",
        "0",
        "--network-width",
        "8",
        "--syn-steps",
        "2",
        "--expert-epochs",
        "1",
        "--max-start-epoch",
        "1",
    ]


@dataclasses.dataclass
class Run:
    stage: str
    rc: int
    seconds: float
    error_line: str  # the command's "raydd.X: error: ..." line, if any
    traceback: bool
    windows: dict[str, float]  # seconds between the first and last sighting of each work process title
    log: str


@dataclasses.dataclass
class Chaos:
    run_id: str
    work: Path
    iterations: int
    rng: np.random.Generator
    aws: dict[str, str]
    own_ray: bool
    head: str | None = None  # the store's Ray head (GCS address)
    cache: Path | None = None
    runs: int = 0
    lineage: Lineage | None = None

    def env(self, tag: str, store: str, *, own_ray: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYDD_FAULTS", "RAY_ADDRESS"))}
        env.update(
            {MARK_VARIABLE: f"{self.run_id}:{tag}", "RAY_ADDRESS": "" if own_ray or not self.head else self.head},
            RAYDD_CACHE=str(self.cache),
            MLFLOW_TRACKING_URI=f"sqlite:///{self.work / 'mlflow.db'}",
            PYTHONUNBUFFERED="1",
            RAY_USAGE_STATS_ENABLED="0",
            RAYDD_LOG_LEVEL="DEBUG",  # Ray Train's checkpoint lines, which _checkpoints counts, show only at DEBUG
            **(self.aws if store.startswith("s3://") else {}),
        )
        return env

    def command(
        self, stage: str, store: str, tag: str, *, own_ray: bool = False, kill: tuple[str, float, int] | None = None
    ) -> tuple[Run, dict[str, Any]]:
        """Run one command to its end; with ``kill=(what, delay_s, checkpoints)`` SIGKILL ``what`` ("driver" or a
        process title) ``delay_s`` after the stage's work processes first appear, or (``checkpoints`` > 0) after
        rank 0 has reported that many checkpoints in the command's log. Returns the run and the fault's record."""
        self.runs += 1
        log = self.work / "logs" / f"{self.runs:03d}-{tag}-{stage}.log"
        log.parent.mkdir(exist_ok=True)
        own_ray = own_ray or self.own_ray
        argv = [sys.executable, "-m", f"raydd.{stage}", *stage_args(stage, store, self.iterations)]
        started = time.monotonic()
        fault: dict[str, Any] = {}
        with log.open("w") as out, ProcessWatch(f"{self.run_id}:", WORK_TITLE.values(), self.lineage) as watch:
            process = subprocess.Popen(argv, env=self.env(tag, store, own_ray=own_ray), stdout=out, stderr=out)
            self.lineage.add(process.pid, f"{self.run_id}:{tag}")
            if kill is not None:
                thread = threading.Thread(target=self._kill, args=(process, stage, log, *kill, fault), daemon=True)
                thread.start()
            rc = process.wait()
            if kill is not None:
                thread.join()
        text = log.read_text(errors="replace")
        errors = [line for line in text.splitlines() if f"raydd.{stage}: error:" in line]
        windows = {k: round(watch.window(k), 2) for k in WORK_TITLE.values() if k in watch.first}
        run = Run(
            stage, rc, time.monotonic() - started, errors[-1] if errors else "", "Traceback" in text, windows, str(log)
        )
        return run, fault

    def _kill(
        self,
        process: subprocess.Popen,
        stage: str,
        log: Path,
        what: str,
        delay_s: float,
        checkpoints: int,
        fault: dict[str, Any],
    ) -> None:
        title = WORK_TITLE[stage]
        while process.poll() is None and not any(title in p.title for p in ours(f"{self.run_id}:", self.lineage)):
            time.sleep(0.1)
        while process.poll() is None and checkpoints and _checkpoints(log) < checkpoints:
            time.sleep(0.1)
        if checkpoints:
            fault["after_checkpoints"] = checkpoints
        appeared = time.monotonic()
        while process.poll() is None and time.monotonic() - appeared < delay_s:
            time.sleep(0.05)
        if process.poll() is not None:
            fault.update(injected=False, why="the command ended before the fault's point")
            return
        if what == "driver":
            os.kill(process.pid, signal.SIGKILL)
            fault.update(injected=True, target=f"driver pid {process.pid}", after_work_started_s=round(delay_s, 2))
            return
        targets = sorted((p for p in ours(f"{self.run_id}:", self.lineage) if what in p.title), key=lambda p: p.pid)
        if not targets:
            fault.update(injected=False, why=f"no {what} process alive at the fault's point")
            return
        target = targets[int(self.rng.integers(len(targets)))]
        kill_all([target])
        fault.update(injected=True, target=f"{target.title} pid {target.pid}", after_work_started_s=round(delay_s, 2))


def _checkpoints(log: Path) -> int:
    """Checkpoints rank 0 has reported so far (Ray Train's lines, forwarded to the driver's log)."""
    text = log.read_text(errors="replace")
    return sum("Reporting training result" in line and "checkpoint=Checkpoint" in line for line in text.splitlines())


# ---- stores ---------------------------------------------------------------------------------------------------


def copy_outputs(source: str, target: str, stages: tuple[str, ...]) -> None:
    """Copy the outputs of ``stages`` from one store to a fresh one (so a scenario starts where its stage starts)."""
    from raydd.storage import resolve

    for stage in stages:
        src, dst = resolve(source).child(OUTPUT_FOLDERS[stage]), resolve(target).child(OUTPUT_FOLDERS[stage])
        if src.is_local:
            shutil.copytree(src.path, dst.path)
        else:
            src.fs.copy(src.path, dst.path, recursive=True)


def store_rows(store: str, stages: tuple[str, ...]) -> dict[str, list[list[Any]] | None]:
    """Rows of every shard listed by a manifest under the outputs of ``stages`` (None: missing or unreadable)."""
    from raydd.storage import manifest_or_none, read_bytes, resolve

    root = resolve(store)
    files: dict[str, list[list[Any]] | None] = {}
    for stage in stages:
        top = root.child(OUTPUT_FOLDERS[stage])
        if not root.fs.exists(top.path):
            continue
        for path in sorted(root.fs.find(top.path)):
            if not path.endswith("/manifest.json"):
                continue
            relative = path[len(root.path.rstrip("/")) + 1 : -len("/manifest.json")]
            folder = root.child(*relative.split("/"))
            manifest = manifest_or_none(folder)
            key = SETTINGS_HASH.sub("", relative)  # a distilled set's name hashes its settings, the store's URI too
            for record in manifest.shards if manifest else ():
                try:
                    files[f"{key}/{record.name}"] = batch_rows(read_bytes(folder.child(record.name)))
                except Exception:  # noqa: BLE001 - a damaged shard is a lost one, whatever the error
                    files[f"{key}/{record.name}"] = None
    return files


def compare(reference: str, store: str, stages: tuple[str, ...]) -> Comparison:
    wanted = {k: v for k, v in store_rows(reference, stages).items() if v is not None}
    return compare_rows(wanted, store_rows(store, stages), RTOL, ATOL)


def truncate(store: str, rng: np.random.Generator) -> dict[str, Any]:
    """Cut a random train shard of the prepared dataset to a random fraction of its bytes, on the storage."""
    from raydd.storage import read_bytes, read_manifest, resolve

    folder = resolve(store).child("datasets", "builtin")
    shards = [r for r in read_manifest(folder).shards if r.group == "train"]
    record = shards[int(rng.integers(len(shards)))]
    keep = int(record.bytes * rng.uniform(0.1, 0.9))
    location = folder.child(record.name)
    if location.is_local:
        os.truncate(location.path, keep)
    else:
        location.fs.pipe(location.path, read_bytes(location)[:keep])
    return {"shard": record.name, "bytes": record.bytes, "kept": keep}


# ---- Ray heads and orphans -----------------------------------------------------------------------------------


@contextmanager
def ray_head(chaos: Chaos, tag: str, store: str) -> Iterator[dict[str, Any]]:
    """A Ray head of this script's own (2 CPUs, its own ports and temp dir; never `ray stop`), stopped by signalling
    its `ray start --block` process; yields a record that gets the orphans it left."""
    temp = Path(tempfile.mkdtemp(prefix="rch", dir="/tmp"))  # Ray's socket paths must fit 107 bytes
    ports = [free_port() for _ in range(7)]
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address=127.0.0.1"]
    argv += [f"--port={ports[0]}", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}"]
    argv += [
        f"--{name}={port}"
        for name, port in zip(
            (
                "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port",
                "runtime-env-agent-port",
                "ray-client-server-port",
                "metrics-export-port",
                "dashboard-port",
            ),
            ports[1:],
            strict=True,
        )
    ]
    env = dict(chaos.env(tag, store, own_ray=True), RAY_AUTH_MODE="disabled")
    log = chaos.work / "logs" / f"{tag}.log"
    log.parent.mkdir(exist_ok=True)
    process = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    chaos.lineage.add(process.pid, f"{chaos.run_id}:{tag}")
    record: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start; see {log}")
            time.sleep(0.5)
        chaos.head = f"127.0.0.1:{ports[0]}"
        os.environ["RAY_AUTH_MODE"] = "disabled"  # commands joining this head
        yield record
    finally:
        chaos.head = None
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        record.update(orphans(chaos, f"{chaos.run_id}:{tag}"))
        shutil.rmtree(temp, ignore_errors=True)


def orphans(chaos: Chaos, prefix: str) -> dict[str, Any]:
    """This prefix's Ray/raydd processes alive SETTLE_S after the end; how long they linger; then killed."""
    time.sleep(SETTLE_S)
    left = ray_or_raydd(ours(prefix, chaos.lineage))
    titles = sorted(p.title for p in left)
    started = time.monotonic()
    while left and time.monotonic() - started < LINGER_LIMIT_S:
        time.sleep(0.5)
        left = ray_or_raydd(ours(prefix, chaos.lineage))
    lingered = time.monotonic() - started if titles else 0.0
    killed = kill_all(ray_or_raydd(ours(prefix, chaos.lineage)))
    return {
        "orphans": len(titles),
        "orphan_titles": titles,
        "lingered_s": round(SETTLE_S + lingered, 1) if titles else 0.0,
        "killed_after_limit": killed,
    }


# ---- scenarios ------------------------------------------------------------------------------------------------


def scenario(
    chaos: Chaos, fault: str, stage: str, root: str, ref: dict[str, Run], ref_store: str, proxy: OutageProxy | None
) -> dict[str, Any]:
    """One fault in a fresh store holding the reference outputs of the stages before ``stage``."""
    tag = f"{fault}-{stage}"
    store = f"{root}/{tag}"
    before = STAGES[: STAGES.index(stage)]
    copy_outputs(ref_store, store, before if fault != "shard_truncated" else ("prepare",))
    shutil.rmtree(chaos.cache, ignore_errors=True)  # a fresh node
    started = time.monotonic()
    window = max(ref[stage].windows.get(WORK_TITLE[stage], 0.0), 0.5)
    delay = float(chaos.rng.uniform(0.1, 0.8)) * window
    row: dict[str, Any] = {"fault": fault, "stage": stage, "store": "s3" if root.startswith("s3://") else "local"}
    runs: list[Run] = []
    if fault in ("train_worker_kill", "expert_worker_kill"):
        # a Ray Train worker dies between two checkpoints, so the restart resumes from one (its startup is a
        # separate point); an expert task's worker anywhere in the task's life
        checkpoints = int(chaos.rng.integers(1, chaos.iterations // CHECKPOINT_EVERY)) if stage == "distill" else 0
        delay = float(chaos.rng.uniform(0, 1)) if checkpoints else delay
        run, row["injection"] = chaos.command(stage, store, tag, kill=(WORK_TITLE[stage], delay, checkpoints))
        runs.append(run)
        survived_runs = run.rc == 0
    elif fault == "driver_kill":
        run, row["injection"] = chaos.command(stage, store, tag, own_ray=True, kill=("driver", delay, 0))
        runs.append(run)
        row["killed_driver_orphans"] = orphans(chaos, f"{chaos.run_id}:{tag}")
        runs.append(chaos.command(stage, store, tag, own_ray=True)[0])
        survived_runs = runs[-1].rc == 0
    elif fault == "shard_truncated":
        row["injection"] = {"injected": True, **truncate(store, chaos.rng)}
        reader = chaos.command("experts", store, tag)[0]
        shard = row["injection"]["shard"]
        refused = reader.rc != 0 and shard in reader.error_line and not reader.traceback
        row["reader"] = "refused in one line" if refused else ("completed" if reader.rc == 0 else "failed unclearly")
        row["reader_line"] = reader.error_line
        runs += [reader, chaos.command("prepare", store, tag)[0]]
        row["prepare_rerun_rc"] = runs[-1].rc
        survived_runs = runs[-1].rc == 0 and row["reader"] != "failed unclearly"
    elif fault == "node_loss":
        assert proxy is not None
        run, row["injection"], row["node_orphans"] = node_loss(chaos, stage, store, tag, proxy.upstream_port)
        runs.append(run)
        survived_runs = run.rc == 0
    else:  # s3_outage
        assert proxy is not None
        writes = max(1, ref[stage].windows.get("writes", 1))
        nth = int(chaos.rng.integers(1, writes + 1))
        proxy.arm(after_writes=nth, down_s=float(chaos.rng.uniform(3, 6)))
        outages = len(proxy.outages)
        run = chaos.command(stage, store, tag)[0]
        runs.append(run)
        proxy.arm(after_writes=10**9, down_s=0)  # disarmed
        row["injection"] = {
            "injected": len(proxy.outages) > outages or run.rc != 0,
            "write_of_stage": nth,
            "writes_of_reference_stage": writes,
            **(proxy.outages[-1:] or [{}])[0],
        }
        if run.rc != 0:
            clear = bool(run.error_line) and not run.traceback
            row["first_run"] = run.error_line or "failed without a raydd error line"
            runs.append(chaos.command(stage, store, tag)[0])
            survived_runs = clear and runs[-1].rc == 0
        else:
            survived_runs = True
    compared = compare(ref_store, store, STAGES[: STAGES.index(stage) + 1])
    row.update(
        exits=[r.rc for r in runs],
        reruns=len(runs) - 1 if fault != "shard_truncated" else 1,
        records=compared.records,
        records_lost=compared.lost,
        lost_by_folder=compared.lost_by_folder,
        bitwise_equal=compared.bitwise,
        max_abs_diff=compared.max_abs_diff,
        logs=[r.log for r in runs],
    )
    row.update(orphans(chaos, f"{chaos.run_id}:{tag}"))
    row["injected"] = bool(row.get("injection", {}).get("injected"))
    row["survived"] = bool(survived_runs and compared.lost == 0) if row["injected"] else None
    row["seconds"] = round(time.monotonic() - started, 1)
    print(table_line(row), file=sys.stderr, flush=True)
    return row


def node_loss(chaos: Chaos, stage: str, store: str, tag: str, s3_port: int) -> tuple[Run, dict[str, Any], int]:
    """``stage`` on a fresh multi-node cluster, a worker node lost once the stage's work runs on it (distill: after
    its first checkpoint) and a replacement added; the run, the fault's record and the workers left behind."""
    from benchmarks.multinode import Background, local_cluster, registered_checkpoint

    chaos.runs += 1
    log = chaos.work / "logs" / f"{chaos.runs:03d}-{tag}-{stage}.log"
    log.parent.mkdir(exist_ok=True)
    fault: dict[str, Any] = {}
    started = time.monotonic()
    with local_cluster(chaos.work / f"nodes-{tag}", workers=2, s3_port=s3_port) as cluster:
        command = [f"raydd.{stage}", *stage_args(stage, store, chaos.iterations)]
        run = Background(cluster, command, log, MLFLOW_TRACKING_URI=f"sqlite:///{chaos.work / 'mlflow.db'}")
        working = [name for name in cluster.nodes if name != "head"]

        def node_at_work() -> str | None:
            if stage == "distill":
                import s3fs

                fs = s3fs.S3FileSystem(endpoint_url=f"http://127.0.0.1:{s3_port}")
                if not registered_checkpoint(fs, store):
                    return None
            return next((n for n in working if any(WORK_TITLE[stage] in p.title for p in cluster.processes(n))), None)

        try:
            name = run.wait_for(node_at_work, f"{stage}'s work on a worker node")
        except AssertionError:  # the command ended (or never got there) before the fault's point
            fault.update(injected=False, why="the command ended before the fault's point")
        else:
            cluster.remove_node(name)
            cluster.add_node(1)
            fault.update(injected=True, target=f"node {name} (raylet and every process on it)")
        rc = run.process.wait()
        left = sum(len(titles) for titles in cluster.left_after(LINGER_LIMIT_S).values())
    text = log.read_text(errors="replace")
    errors = [line for line in text.splitlines() if f"raydd.{stage}: error:" in line]
    run_record = Run(
        stage, rc, time.monotonic() - started, errors[-1] if errors else "", "Traceback" in text, {}, str(log)
    )
    return run_record, fault, left


def plan(store: str, quick: bool, rng: np.random.Generator) -> list[tuple[str, str]]:
    faults = [("train_worker_kill", "distill"), ("expert_worker_kill", "experts")]
    if quick:
        faults.append(("driver_kill", STAGES[int(rng.integers(3))]))
    else:
        faults += [("driver_kill", stage) for stage in STAGES]
    faults.append(("shard_truncated", "prepare"))
    if store == "s3":
        faults += [("s3_outage", STAGES[int(rng.integers(3))])] if quick else [("s3_outage", s) for s in STAGES]
        faults += [("node_loss", "distill")] if quick else [("node_loss", s) for s in STAGES]
    return faults


def table_line(row: dict[str, Any]) -> str:
    survived = {True: "yes", False: "NO", None: "not injected"}[row["survived"]]
    orphans_total = row["orphans"] + row.get("killed_driver_orphans", {}).get("orphans", 0) + row.get("node_orphans", 0)
    return (
        f"{row['fault']:<19} {row['stage']:<8} {row['store']:<6} {survived:<13} {row['records_lost']:>5}/"
        f"{row['records']:<5} {orphans_total:>7} {row['seconds']:>8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one driver kill and one outage a store, at random")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault points")
    parser.add_argument("--stores", default="local,s3", help="comma-separated: local, s3")
    parser.add_argument("--faults", default="", help="comma-separated: only these faults (default: all)")
    parser.add_argument("--own-ray", action="store_true", help="every command starts its own local Ray")
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given (default: a temporary folder)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="raydd-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = time.monotonic()
    aws = {"AWS_ACCESS_KEY_ID": "chaos", "AWS_SECRET_ACCESS_KEY": "chaos", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(aws)
    rng = np.random.default_rng(args.seed)
    chaos = Chaos(f"c{os.getpid()}", work, 30 if args.quick else 60, rng, aws, args.own_ray)
    rows, heads = [], {}
    print(
        f"{'fault':<19} {'stage':<8} {'store':<6} {'survived':<13} {'lost':>11} {'orphans':>7} {'seconds':>8}",
        file=sys.stderr,
    )
    try:
        with Lineage() as chaos.lineage, moto_server() as port:
            proxy = OutageProxy(port)
            chaos.aws = dict(aws, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{proxy.port}")
            os.environ["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{port}"  # this script's copies and reads: no outage
            import s3fs

            s3fs.S3FileSystem(endpoint_url=f"http://127.0.0.1:{port}").mkdir(BUCKET)
            for kind in args.stores.split(","):
                root = f"s3://{BUCKET}" if kind == "s3" else str(work / "local")
                chaos.cache = work / f"cache-{kind}"
                with ray_head(chaos, f"head-{kind}", root) as heads[kind]:
                    writes = proxy.writes
                    ref_store = f"{root}/reference"
                    ref: dict[str, Run] = {}
                    for stage in STAGES:
                        ref[stage], _ = chaos.command(stage, ref_store, "reference")
                        if ref[stage].rc != 0:
                            raise RuntimeError(f"the undisturbed {stage} failed; see {ref[stage].log}")
                        ref[stage].windows["writes"] = proxy.writes - writes
                        writes = proxy.writes
                    heads[kind]["reference_seconds"] = {s: round(r.seconds, 1) for s, r in ref.items()}
                    heads[kind]["reference_windows"] = {s: r.windows for s, r in ref.items()}
                    for fault, stage in plan(kind, args.quick, rng):
                        if args.faults and fault not in args.faults.split(","):
                            continue
                        rows.append(
                            scenario(chaos, fault, stage, root, ref, ref_store, proxy if kind == "s3" else None)
                        )
            proxy.close()
    finally:
        chaos.lineage = chaos.lineage or Lineage()
        left = ray_or_raydd(ours(f"{chaos.run_id}:", chaos.lineage))
        kill_all(left)  # ours only (marked); none should be left
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    injected = [r for r in rows if r["injected"]]
    results = {
        "quick": args.quick,
        "seed": args.seed,
        "own_ray": args.own_ray,
        "faults_injected": len(injected),
        "faults_not_survived": sum(not r["survived"] for r in injected),
        "faults_not_injected": len(rows) - len(injected),
        "records_lost": sum(r["records_lost"] for r in rows),
        "orphan_processes": sum(
            r["orphans"] + r.get("killed_driver_orphans", {}).get("orphans", 0) + r.get("node_orphans", 0) for r in rows
        )
        + sum(h.get("orphans", 0) for h in heads.values()),
        "left_at_exit": len(left),
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "scenarios": rows,
        "heads": heads,
        "wall_s": round(time.monotonic() - started, 1),
        # CPU seconds of every process this script started and waited for (Ray heads and commands with theirs):
        # on 2 idle cores the run takes at least half of it
        "cpu_s_children": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime,
            1,
        ),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chaos.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{'fault':<19} {'stage':<8} {'store':<6} {'survived':<13} {'lost':>11} {'orphans':>7} {'seconds':>8}")
    for row in rows:
        print(table_line(row))
    head_orphans = sum(h.get("orphans", 0) for h in heads.values())
    print(
        f"\nfaults injected {results['faults_injected']}, not survived {results['faults_not_survived']}, records lost "
        f"{results['records_lost']}, orphan processes {results['orphan_processes']} (Ray heads: {head_orphans}); "
        f"{results['wall_s']:.0f} s ({results['cpu_s_children']:.0f} CPU s), load average {load_before[0]:.1f} "
        f"before, {results['load_average_after'][0]:.1f} after, {os.cpu_count()} CPUs -> {RESULTS / 'chaos.json'}"
    )


if __name__ == "__main__":
    main()
