"""Benchmark scale (issue 11): strong scaling of DM over Ray Train workers, worker memory against dataset size,
bytes a node fetches from S3 over a two-stage run with a worker killed and over an MTT run (dataset and expert
trajectories), and the error of ``--plan``'s memory.

    .venv/bin/python benchmarks/scale.py --quick     # < 10 min on 2 cores
    .venv/bin/python benchmarks/scale.py             # more iterations per measurement

Inputs: a Kinetics-400-shaped dataset (400 classes, 8x64x64 uint8 clips, random but seeded, written with raydd's
own shard and manifest writers as ``STORE/datasets/k400``) at two sizes, ``--clips`` a class (default 10 and 40),
on local disk; the smaller one also on moto's standalone S3 server on 127.0.0.1 (s3-mtt writes its own, smaller
one there).

Sections (each judged against its target; every number comes from this run):

scaling  DM naive at K400 shape through Ray Train (``ray.init(num_cpus=2)``), ``--worker-split classes``, 1 CPU and 1
         torch thread per worker, ``--batch-real`` lowered so an iteration takes seconds: median seconds per
         iteration with 1 worker / with 2 workers (the same total work). Target >= 1.7.
memory   The same stage on 1 Ray Train worker over the small and the 4x larger dataset: the worker process's peak
         private (anonymous) memory, ``RssAnon`` of /proc/PID/status sampled every 10 ms. Target: 4x data / 1x
         <= 1.15. Beside it, ``--plan``'s predicted per-worker host memory for the same run; target
         |predicted - measured| / measured <= 0.25.
s3       ``python -m raydd.distill --dataset k400 --paradigm static-dynamic --workers 2`` on the S3 store, with a
         fresh node cache (``RAYDD_CACHE``) and ``RAYDD_FAULTS=fail_at_iteration=2`` killing stage 2's rank-0
         worker once (Ray Train restarts it from the last checkpoint). Every S3 request of the run (driver and
         workers) goes through a byte-counting TCP proxy on 127.0.0.1 in front of moto; target: bytes received / the
         bytes of the train split's shards <= 1.05.
s3-mtt   The same count for MTT, whose workers also read expert trajectories: on a fresh moto store, a dataset at
         builtin's layout (10 classes, 8x32x32 uint8 clips, 30 a class, in 4 shards) and 3 MiniC3D experts of 2
         epochs trained by ``python -m raydd.experts`` (straight to moto, not counted), then ``python -m
         raydd.distill --method mtt --paradigm naive --workers 2`` from a fresh node cache, every S3 request of the
         distill through the proxy. Target: bytes received / (the train split's shard bytes + the experts'
         trajectory shard bytes) <= 1.05. The GETs and bytes of every object are kept (``mtt_gets_by_object``), so
         a refetch names its object. No worker is killed here: a restart reads its checkpoint back, at this size
         at least the synthetic videos' 1 MB (6 % of the denominator), which is no refetch (the s3 section covers
         restarts, where the dataset dwarfs the checkpoint).

Prints a table and writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from raydd.data.shards import DATASET_KIND, write_clip_shard
from raydd.data.specs import get_spec
from raydd.storage import Manifest, ShardRecord, atomic_writer, manifest_or_none, resolve, write_manifest

CLASSES, FRAMES, SIDE = 400, 8, 64
CLIP_SHAPE = (FRAMES, SIDE, SIDE, 3)
SHARD_BYTES = 128 << 20
TARGETS = {
    "dm_strong_scaling_2_workers": (">=", 1.7),
    "worker_rss_growth_4x_data": ("<=", 1.15),
    "s3_bytes_per_node_per_run_over_dataset_bytes": ("<=", 1.05),
    "s3_bytes_per_node_mtt_over_dataset_and_experts_bytes": ("<=", 1.05),
    "plan_memory_error": ("<=", 0.25),
}
# DM at K400 shape, made cheap enough for 2 cores: an iteration embeds CLASSES x BATCH_REAL real clips.
DM_OVERRIDES = {"batch_real": 2, "network_width": 16}
RESULTS = Path(__file__).resolve().parent / "results"


# ---- inputs --------------------------------------------------------------------------------------------------


def write_k400_like(store: str, train_per_class: int, test_per_class: int = 1, *, seed: int = 0) -> str:
    """``STORE/datasets/k400`` holding random uint8 clips at K400's shape, shards mixing classes as prepare's do."""
    return write_random_like(store, "k400", CLASSES, CLIP_SHAPE, train_per_class, test_per_class, seed=seed)


def write_random_like(
    store: str,
    name: str,
    classes: int,
    clip_shape: tuple[int, int, int, int],
    train_per_class: int,
    test_per_class: int = 1,
    *,
    seed: int = 0,
    shard_bytes: int = SHARD_BYTES,
) -> str:
    """``STORE/datasets/NAME`` holding random uint8 clips of ``clip_shape`` (T, H, W, C), as a prepared NAME with
    ``classes`` classes would be laid out (its manifest's class counts are what ``--plan`` reads), in shards of
    about ``shard_bytes``."""
    folder = resolve(store).child("datasets", name)
    found = manifest_or_none(folder)
    if (
        found is not None
        and found.metadata.get("clips", {}).get("train") == classes * train_per_class
        and tuple(found.metadata.get("clip_shape", ())) == tuple(clip_shape)
    ):
        return folder.uri
    rng = np.random.default_rng(seed)
    clip_bytes = int(np.prod(clip_shape))
    per_shard = max(1, shard_bytes // clip_bytes)
    records, counts = [], {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(classes, dtype=np.int32), per_class))
        counts[split] = per_class
        for number, start in enumerate(range(0, len(labels), per_shard)):
            chunk = labels[start : start + per_shard]
            frames_NTHWC = rng.integers(0, 256, (len(chunk), *clip_shape), dtype=np.uint8)
            location = folder.child(f"{split}-{number:05d}.arrow")
            with atomic_writer(location) as handle:
                write_clip_shard(
                    handle, frames_NTHWC, chunk, [f"random:{split}:{start + i}" for i in range(len(chunk))], []
                )
            records.append(ShardRecord(location.name, len(chunk), handle.bytes_written, handle.hexdigest(), split))
    frames, height, width, _ = clip_shape
    spec = dataclasses.replace(get_spec(name), num_frames=frames, height=height, width=width)
    names = [f"class{c:03d}" for c in range(classes)]
    spec_dict = {**spec.to_dict(), "classes": names}
    uniform_std = float(np.sqrt((256**2 - 1) / 12) / 255)
    metadata = {
        "spec": spec_dict,
        "classes": names,
        "clip_shape": list(clip_shape),
        "clips": {split: classes * n for split, n in counts.items()},
        "class_counts": {split: dict.fromkeys(names, n) for split, n in counts.items()},
        "skipped": {"count": 0, "files": []},
        "missing": {"count": 0, "examples": []},
        "train_mean": [0.5] * 3,
        "train_std": [round(uniform_std, 6)] * 3,
        "note": f"random uint8 clips at {name}'s layout (benchmarks/scale.py)",
    }
    write_manifest(folder, Manifest(kind=DATASET_KIND, shards=tuple(records), metadata=metadata))
    return folder.uri


def split_bytes(dataset_uri: str, split: str) -> int:
    manifest = manifest_or_none(resolve(dataset_uri))
    assert manifest is not None, dataset_uri
    return sum(record.bytes for record in manifest.group(split))


# ---- measuring processes ----------------------------------------------------------------------------------------


def _anon_bytes(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^RssAnon:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def _is_train_worker(pid: int) -> bool:
    try:
        return "TrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


class WorkerMemory:
    """Samples the private (anonymous) memory of every Ray Train worker process while a block runs."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for entry in os.listdir("/proc"):
                if entry.isdigit() and _is_train_worker(int(entry)):
                    pid = int(entry)
                    self.peak[pid] = max(self.peak.get(pid, 0), _anon_bytes(pid))

    @contextmanager
    def sampling(self) -> Iterator[WorkerMemory]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


class ByteCountingProxy:
    """A TCP forwarder on 127.0.0.1 in front of the S3 server that counts the bytes the server sends back, and
    per request (plain HTTP/1.1 on loopback, one request at a time on a connection: a response's bytes belong to
    the last request line the client sent on it), so every S3 request of a run is measured and attributed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.received = 0
        self.requests: list[str] = []
        self.bytes_by_request: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            current = ["(none)"]
            threading.Thread(target=self._pipe, args=(client, upstream, current, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, current, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, current: list[str], downstream: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                with self._lock:
                    if downstream:
                        self.received += len(data)
                        self.bytes_by_request[current[0]] = self.bytes_by_request.get(current[0], 0) + len(data)
                    else:
                        found = re.findall(rb"(?:^|\r\n)((?:GET|HEAD|PUT|POST|DELETE) \S+) HTTP/1\.1", data)
                        lines = [line.decode(errors="replace") for line in found]
                        self.requests += lines
                        if lines:
                            current[0] = lines[-1]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._server.close()


@contextmanager
def moto_server() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                threading.Event().wait(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---- sections ---------------------------------------------------------------------------------------------------


def _stage_spec(dataset_uri: str, split: str) -> Any:
    from raydd.distill.presets import table_preset
    from raydd.distill.stages import NAIVE, StageSpec

    preset = table_preset("dm", "naive", "k400", 1)
    assert preset is not None
    return StageSpec(
        stage=NAIVE,
        method="dm",
        dataset_uri=dataset_uri,
        ipc=1,
        preset=dataclasses.replace(preset, **DM_OVERRIDES),
        split=split,
    )


def fit(dataset_uri: str, workers: int, iterations: int, runs: Path, name: str) -> dict[str, Any]:
    from raydd.distill.ray_train import RunSettings, fit_stage

    run = RunSettings(
        iterations=iterations, checkpoint_every=iterations, workers=workers, cpus_per_worker=1, log_every=10**9
    )
    return fit_stage(_stage_spec(dataset_uri, "classes"), run, runs=resolve(str(runs)), name=name)


def scaling(dataset_uri: str, warmup: int, timed: int, runs: Path) -> dict[str, Any]:
    seconds = {}
    for workers in (1, 2):
        print(f"  scaling: {workers} worker(s) ...", end="", flush=True, file=sys.stderr)
        started = time.perf_counter()
        history = fit(dataset_uri, workers, warmup + timed, runs, f"scaling-{workers}")["history"]
        seconds[workers] = history["seconds"][warmup:]
        print(
            f" {time.perf_counter() - started:.0f} s, median {statistics.median(seconds[workers]):.2f} s/it",
            file=sys.stderr,
        )
    ratio = statistics.median(seconds[1]) / statistics.median(seconds[2])
    return {"dm_strong_scaling_2_workers": ratio, "seconds_1_worker": seconds[1], "seconds_2_workers": seconds[2]}


def predicted_worker_bytes(store: str, workers: int) -> int:
    """``--plan``'s per-worker host memory for the run :func:`fit` makes (DM naive, --worker-split classes, CPU)."""
    from raydd.distill.settings import DistillConfig
    from raydd.distill.stage_presets import resolve_presets
    from raydd.planning.distill import plan_distill

    config = DistillConfig(
        dataset="k400",
        store=store,
        method="dm",
        paradigm="naive",
        workers=workers,
        use_gpu=False,
        cpus_per_worker=1,
        eval_runs=0,
        **DM_OVERRIDES,
    )
    return plan_distill(config, resolve_presets(config)).worker_host_bytes


def memory(datasets: dict[int, str], iterations: int, runs: Path) -> dict[str, Any]:
    measured, predicted = {}, {}
    for clips, uri in datasets.items():
        print(f"  memory: 1 worker, {clips} clips a class ...", end="", flush=True, file=sys.stderr)
        with WorkerMemory().sampling() as sampler:
            fit(uri, 1, iterations, runs, f"memory-{clips}")
        if not sampler.peak:
            raise RuntimeError("no Ray Train worker process was seen")
        measured[clips] = max(sampler.peak.values())
        predicted[clips] = predicted_worker_bytes(uri.rsplit("/datasets/", 1)[0], 1)
        print(f" peak private {measured[clips] / 1e6:.0f} MB (plan {predicted[clips] / 1e6:.0f} MB)", file=sys.stderr)
    small, large = min(measured), max(measured)
    errors = {clips: abs(predicted[clips] - measured[clips]) / measured[clips] for clips in measured}
    return {
        "worker_rss_growth_4x_data": measured[large] / measured[small],
        "plan_memory_error": max(errors.values()),
        "worker_private_bytes": {str(k): v for k, v in measured.items()},
        "plan_worker_host_bytes": {str(k): v for k, v in predicted.items()},
        "plan_errors": {str(k): v for k, v in errors.items()},
    }


@dataclasses.dataclass(frozen=True)
class S3Store:
    """moto's S3 server with a bucket: ``uri`` a store in it, ``env`` a child's environment that reaches it
    directly (not through a proxy), ``port`` the server's."""

    port: int
    uri: str
    env: dict[str, str]


@contextmanager
def s3_store() -> Iterator[S3Store]:
    """A fresh moto S3 server holding bucket ``bench``; this process's AWS variables point at it for as long as it
    runs, so raydd's own writers (``write_random_like``, manifests) write straight to it, and are put back after
    (each section starts a server of its own, on another port)."""
    import s3fs

    with moto_server() as port:
        ours = {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        }
        saved = {name: os.environ.get(name) for name in ours}
        os.environ.update(ours)
        try:
            s3fs.S3FileSystem(endpoint_url=ours["AWS_ENDPOINT_URL_S3"]).mkdir("bench")
            yield S3Store(port, "s3://bench/store", dict(os.environ))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@dataclasses.dataclass(frozen=True)
class CountedRun:
    proxy: ByteCountingProxy
    output: str  # stdout and stderr
    wall_s: float


def node_env(s3: S3Store, work: Path, name: str, **env: str) -> dict[str, str]:
    """A child's environment on ``s3`` as a fresh node: its own, empty ``RAYDD_CACHE`` (``WORK/NAME-cache``) and the
    run's MLflow database in ``work``."""
    cache = work / f"{name}-cache"
    shutil.rmtree(cache, ignore_errors=True)
    return dict(
        s3.env,
        RAYDD_CACHE=str(cache),
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        PYTHONUNBUFFERED="1",
        **env,
    )


def run_as_fresh_node(s3: S3Store, command: list[str], work: Path, name: str, **env: str) -> CountedRun:
    """``command`` as a node that has never read the store: a new, empty ``RAYDD_CACHE`` (so everything it reads
    comes from S3) and every S3 request through a :class:`ByteCountingProxy`, which counts only this command."""
    proxy = ByteCountingProxy(s3.port)
    run_env = node_env(s3, work, name, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{proxy.port}", **env)
    started = time.perf_counter()
    done = subprocess.run(command, env=run_env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    proxy.close()
    print(f" {wall:.0f} s (exit {done.returncode})", file=sys.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{name} on S3 failed: {done.stderr.strip().splitlines()[-1:]}")
    return CountedRun(proxy, done.stdout + done.stderr, wall)


def object_gets(proxy: ByteCountingProxy, under: str) -> dict[str, dict[str, int]]:
    """GET requests and response bytes per object key below ``under`` (``/bench/store/...``): an object fetched
    twice shows as ``gets`` 2, and its ``bytes`` say how much of it the node took each time."""
    found: dict[str, dict[str, int]] = {}
    for line in proxy.requests:
        method, path = line.split(" ", 1)
        key = path.split("?")[0]
        if method == "GET" and key.startswith(under) and not key.endswith("/"):
            found.setdefault(key, {"gets": 0, "bytes": 0})["gets"] += 1
    for line, received in proxy.bytes_by_request.items():
        method, path = line.split(" ", 1) if " " in line else ("", line)
        key = path.split("?")[0]
        if method == "GET" and key in found:
            found[key]["bytes"] += received
    return found


def _largest(proxy: ByteCountingProxy, n: int = 12) -> dict[str, int]:
    return dict(sorted(proxy.bytes_by_request.items(), key=lambda kv: -kv[1])[:n])


def _distill_command(store: str, dataset: str, method: str, paradigm: str, iterations: int, *flags: str) -> list[str]:
    return [
        *(sys.executable, "-m", "raydd.distill", "--dataset", dataset, "--store", store, "--method", method),
        *("--paradigm", paradigm, "--ipc", "1", "--workers", "2", "--cpus-per-worker", "1"),
        *("--iterations", str(iterations), "--eval-runs", "0", *flags),
    ]


def s3_run(clips: int, iterations: int, work: Path) -> dict[str, Any]:
    with s3_store() as s3:
        print(f"  s3: writing {clips} clips a class to moto ...", end="", flush=True, file=sys.stderr)
        dataset_uri = write_k400_like(s3.uri, clips)
        train_bytes = split_bytes(dataset_uri, "train")
        print(f" {train_bytes / 1e6:.0f} MB", file=sys.stderr)
        command = _distill_command(
            s3.uri,
            "k400",
            "dm",
            "static-dynamic",
            iterations,
            *("--checkpoint-every", "2", "--max-failures", "1"),
            *[f"--{k.replace('_', '-')}={v}" for k, v in DM_OVERRIDES.items()],
        )
        print(
            "  s3: two-stage distill on 2 workers, a worker killed in stage 2 ...", end="", flush=True, file=sys.stderr
        )
        run = run_as_fresh_node(s3, command, work, "s3", RAYDD_FAULTS="fail_at_iteration=2")
        gets = object_gets(run.proxy, "/bench/store/datasets/k400/")
        return {
            "s3_bytes_per_node_per_run_over_dataset_bytes": run.proxy.received / train_bytes,
            "s3_bytes_received": run.proxy.received,
            "train_split_bytes": train_bytes,
            "s3_requests": len(run.proxy.requests),
            "shard_get_requests": {k.rsplit("/", 1)[-1]: v["gets"] for k, v in gets.items() if k.endswith(".arrow")},
            "worker_restarted": "resuming at iteration" in run.output,
            "wall_s": run.wall_s,
            "largest_responses": _largest(run.proxy),
        }


# MTT at builtin's layout (10 classes, 8x32x32), small enough that experts and distill take a minute or two on 2
# cores: MiniC3D experts of width 32 as the pipeline trains builtin's (raydd/pipeline/comparison.py), 2 epochs, and
# a student that matches 1 epoch from a start in the first.
MTT_CLASSES, MTT_CLIP_SHAPE, MTT_SHARD_BYTES = 10, (8, 32, 32, 3), 2 << 20
MTT_EXPERTS = ["--width", "32", "--batch-size", "32", "--lr-teacher", "0.05", "--epochs", "2", "--num-experts", "3"]
MTT_OVERRIDES = {"max_start_epoch": 1, "expert_epochs": 1, "syn_steps": 4, "batch_syn": 10}


def s3_mtt_run(clips: int, iterations: int, work: Path) -> dict[str, Any]:
    """MTT naive on 2 workers from a fresh node, after experts trained by another node (straight to moto, not counted).
    What the distill should fetch, once per node: the train split (each worker opens it whole, as every stage does)
    and every expert trajectory (each worker's ExpertBank opens them all); a little more for manifests and headers."""
    from raydd.experts.trajectories import EXPERTS_KIND

    with s3_store() as s3:
        print(f"  s3-mtt: writing {clips} clips a class of builtin's layout to moto ...", end="", file=sys.stderr)
        dataset_uri = write_random_like(
            s3.uri, "builtin", MTT_CLASSES, MTT_CLIP_SHAPE, clips, shard_bytes=MTT_SHARD_BYTES
        )
        train_bytes = split_bytes(dataset_uri, "train")
        print(f" {train_bytes / 1e6:.1f} MB", file=sys.stderr)
        print("  s3-mtt: training experts into the store ...", end="", flush=True, file=sys.stderr)
        started = time.perf_counter()
        experts = [sys.executable, "-m", "raydd.experts", "--dataset", "builtin", "--store", s3.uri, *MTT_EXPERTS]
        done = subprocess.run(experts, env=node_env(s3, work, "experts"), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"experts on S3 failed: {done.stderr.strip().splitlines()[-1:]}")
        experts_folder = resolve(s3.uri).child("experts", "builtin", "minic3d")
        manifest = manifest_or_none(experts_folder)
        assert manifest is not None and manifest.kind == EXPERTS_KIND, experts_folder
        expert_bytes = sum(record.bytes for record in manifest.shards)
        print(
            f" {len(manifest.shards)}, {expert_bytes / 1e6:.1f} MB in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        command = _distill_command(
            s3.uri,
            "builtin",
            "mtt",
            "naive",
            iterations,
            *("--checkpoint-every", str(iterations)),
            *[f"--{k.replace('_', '-')}={v}" for k, v in MTT_OVERRIDES.items()],
        )
        print("  s3-mtt: MTT naive on 2 workers, a fresh node cache ...", end="", flush=True, file=sys.stderr)
        run = run_as_fresh_node(s3, command, work, "s3-mtt")
        denominator = train_bytes + expert_bytes
        return {
            "s3_bytes_per_node_mtt_over_dataset_and_experts_bytes": run.proxy.received / denominator,
            "mtt_s3_bytes_received": run.proxy.received,
            "mtt_train_split_bytes": train_bytes,
            "mtt_expert_bytes": expert_bytes,
            "mtt_experts": len(manifest.shards),
            "mtt_s3_requests": len(run.proxy.requests),
            "mtt_gets_by_object": object_gets(run.proxy, "/bench/store/"),
            "mtt_wall_s": run.wall_s,
            "mtt_largest_responses": _largest(run.proxy),
        }


# ---- main --------------------------------------------------------------------------------------------------------


def judge(results: dict[str, Any], targets: dict[str, tuple[str, float]] = TARGETS) -> list[tuple[str, str, str, str]]:
    """(metric, value, target, PASS/FAIL/not measured) for each target; a sense is ``>=``, ``<=`` or ``==``."""
    rows = []
    for key, (sense, bound) in targets.items():
        value = results.get(key)
        if value is None:
            rows.append((key, "-", f"{sense} {bound}", "not measured"))
            continue
        ok = {">=": value >= bound, "<=": value <= bound, "==": value == bound}[sense]
        rows.append((key, f"{value:.3f}", f"{sense} {bound}", "PASS" if ok else "FAIL"))
    return rows


def write_results(
    name: str,
    results: dict[str, Any],
    rows: list[tuple[str, str, str, str]],
    widths: tuple[int, int, int] = (48, 8, 8),
    path: Path | None = None,
) -> None:
    """Print the verdict table and write ``path`` (default ``benchmarks/results/NAME.json``): the results with their
    verdicts."""
    results["verdicts"] = {key: status for key, _, _, status in rows}
    metric, value, target = widths
    print(f"\n{'metric':<{metric}} {'value':>{value}}  {'target':<{target}} status")
    for row in rows:
        print(f"{row[0]:<{metric}} {row[1]:>{value}}  {row[2]:<{target}} {row[3]}")
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {path} ({results['wall_s']:.0f} s)", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (under 10 minutes on 2 cores)")
    parser.add_argument("--clips", default="10,40", help="train clips a class of the small and the large dataset")
    parser.add_argument(
        "--sections", default="scaling,memory,s3,s3-mtt", help="comma-separated: scaling, memory, s3, s3-mtt"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where datasets and runs go (default: a temporary folder)"
    )
    args = parser.parse_args()
    small, large = (int(n) for n in args.clips.split(","))
    sections = args.sections.split(",")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="raydd-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    warmup, timed = (1, 4) if args.quick else (2, 8)
    os.environ.setdefault("RAYDD_CACHE", str(work / "cache"))
    results: dict[str, Any] = {
        "quick": args.quick,
        "clips_per_class": [small, large],
        "dm_overrides": DM_OVERRIDES,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    started = time.perf_counter()
    try:
        local = {}
        if {"scaling", "memory"} & set(sections):
            for clips in (small, large) if "memory" in sections else (small,):
                print(f"writing the K400-shaped dataset, {clips} clips a class ...", file=sys.stderr)
                local[clips] = write_k400_like(str(work / f"store-{clips}"), clips)
            import ray

            ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
            try:
                runs = work / "runs"
                if "scaling" in sections:
                    results.update(scaling(local[small], warmup, timed, runs))
                if "memory" in sections:
                    results.update(memory({small: local[small], large: local[large]}, warmup + timed, runs))
            finally:
                ray.shutdown()
        if "s3" in sections:
            results.update(s3_run(small, 4 if args.quick else 6, work))
        if "s3-mtt" in sections:
            results.update(s3_mtt_run(30, 4 if args.quick else 10, work))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - started
    write_results("scale", results, judge(results), widths=(max(map(len, TARGETS)), 8, 8))


if __name__ == "__main__":
    main()
