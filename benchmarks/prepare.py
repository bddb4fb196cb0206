"""Benchmark ``python -m raydd.prepare`` (decode throughput, Ray scaling and overhead) and shard reading.

Run from the repository root::

    .venv/bin/python benchmarks/prepare.py            # default run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/prepare.py --quick    # smoke run (well under a minute)

What it does:

1. Generates a folder dataset of real encoded videos with PyAV (SOURCE/<class>/<n>.mp4) in a temp dir.
2. Prepares it (16 frames at 112x112 by default) four ways, each into a fresh store, ``--repeats`` times:
   * ``plain``: one process, no Ray: ``decode_clip`` for every clip + ``write_clip_shard`` per shard,
     with the same shard partition as ``plan_shards`` (the work ``prepare`` fans out, minus Ray);
   * ``engine``: one process, no Ray: ``raydd.data.ingest.write_shard`` per shard + manifest (also
     histograms, SHA-256, fsync: the exact task body), to separate Ray's cost from the engine's extras;
   * ``ray-1`` and ``ray-2``: ``raydd.data.preparation.prepare(PrepareConfig(workers=1|2))`` on a Ray
     session started once with ``ray.init(num_cpus=2)``; a warm-up run first starts the worker processes.
3. Reads the prepared train split, and a larger synthetic dataset written directly with
   ``write_clip_shard``, through ``open_prepared(uri).split("train").batch(indices)`` in sequential and
   shuffled order, reporting MB/s (1 MB = 1e6 bytes) of uint8 frames delivered as torch tensors.

Times exclude Ray startup (reported separately). Every process is kept to one compute thread.
"""

from __future__ import annotations

import os

for _name in (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ.setdefault(_name, "1")  # before numpy/torch are imported; Ray workers inherit it

import argparse
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MiB = 1 << 20
MB = 1e6

TARGET_SPEEDUP = 1.7
TARGET_OVERHEAD = 0.15
TARGET_READ_MBPS = 1000.0
NOISY_CORES = 0.1  # other processes busier than this during a timed run make its timing unreliable


# ------------------------------------------------------------------------------------------ video data


def _encode_video(path: str, label: int, number: int, n_frames: int, width: int, height: int, codec: str) -> int:
    """One synthetic but realistic video: a coloured gradient background, a moving object, sensor noise."""
    import av

    rng = np.random.default_rng(1000 * label + number)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    colour_a = rng.uniform(0, 255, 3).astype(np.float32)
    colour_b = rng.uniform(0, 255, 3).astype(np.float32)
    mix = ((xx / width + yy / height) / 2)[..., None]
    background = colour_a * (1 - mix) + colour_b * mix
    box = max(8, min(width, height) // 5)
    obj_colour = np.array([(label * 67) % 256, (label * 131 + 80) % 256, (label * 29 + 160) % 256], np.float32)
    x, y = rng.uniform(0, width - box), rng.uniform(0, height - box)
    angle = 2 * np.pi * label / 8 + rng.normal(0, 0.2)
    speed = 1.5 + label % 4
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "23"}
        for t in range(n_frames):
            frame = background + rng.normal(0, 6, background.shape).astype(np.float32)
            px = int(abs((x + t * speed * np.cos(angle)) % (2 * (width - box)) - (width - box)))
            py = int(abs((y + t * speed * np.sin(angle)) % (2 * (height - box)) - (height - box)))
            frame[py : py + box, px : px + box] = obj_colour
            rgb = np.clip(frame, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return os.path.getsize(path)


def generate_videos(source: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``args.videos`` mp4 files spread over ``args.classes`` class folders, encoded in parallel."""
    jobs = []
    for number in range(args.videos):
        label = number % args.classes
        folder = source / f"class{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append(
            (
                str(folder / f"video{number:04d}.mp4"),
                label,
                number,
                args.video_frames,
                args.video_width,
                args.video_height,
                args.codec,
            )
        )
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        sizes = list(pool.map(_encode_video, *zip(*jobs), chunksize=4))
    return {"videos": len(jobs), "bytes": int(sum(sizes)), "seconds": time.perf_counter() - started}


# ------------------------------------------------------------------------------------------ CPU accounting

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _processes() -> dict[int, tuple[int, str, float]]:
    """Every process: pid -> (parent pid, command line, CPU seconds it used so far)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        found[int(entry)] = (int(fields[1]), cmdline or stat.split("(", 1)[1].split(")")[0], cpu)
    return found


def _machine_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


def machine_load(seconds: float = 0.5) -> float:
    """Average busy cores of the whole machine over ``seconds``."""
    busy, _ = _machine_seconds()
    time.sleep(seconds)
    return (_machine_seconds()[0] - busy) / seconds


def wait_until_quiet(budget: dict[str, float], threshold: float = 0.25) -> float:
    """Wait (out of ``budget['left']`` seconds in all) until the machine is nearly idle; returns the load seen."""
    load = machine_load()
    while load > threshold and budget["left"] > 0:
        started = time.perf_counter()
        load = machine_load(1.0)
        budget["left"] -= time.perf_counter() - started
    return load


class CpuMeter:
    """CPU used during a block, in average busy cores: this driver, its Ray worker processes, the rest of
    its Ray session (raylet, GCS, dashboard, agents), everything else on the machine (background load:
    other people's jobs, which make timings noisy), and steal (the hypervisor running other VMs)."""

    def __enter__(self) -> CpuMeter:
        self._before, self._machine, self._started = _processes(), _machine_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        after, machine, seconds = _processes(), _machine_seconds(), time.perf_counter() - self._started
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _) in after.items():
            children.setdefault(parent, []).append(pid)
        mine, stack = set(), [os.getpid()]
        while stack:
            pid = stack.pop()
            mine.add(pid)
            stack.extend(children.get(pid, []))
        used = dict.fromkeys(("driver", "ray workers", "ray system"), 0.0)
        for pid in mine:
            _, cmdline, cpu = after[pid]
            delta = max(cpu - self._before.get(pid, (0, "", 0.0))[2], 0.0)
            if pid == os.getpid():
                used["driver"] += delta
            elif cmdline.startswith("ray::") and "Agent" not in cmdline:
                used["ray workers"] += delta
            else:
                used["ray system"] += delta
        busy = machine[0] - self._machine[0]
        self.seconds = seconds
        self.cores = {group: cpu / seconds for group, cpu in used.items()}
        self.cores["other processes"] = max(busy - sum(used.values()), 0.0) / seconds
        self.cores["steal"] = (machine[1] - self._machine[1]) / seconds


# ------------------------------------------------------------------------------------------ prepare runs


def _config(args: argparse.Namespace, source: Path, store: Path, workers: int):
    from raydd.data.preparation import PrepareConfig

    return PrepareConfig(
        dataset="folder",
        source=str(source),
        store=str(store),
        frames=args.clip_frames,
        height=args.clip_size,
        width=args.clip_size,
        shard_mb=args.shard_mb,
        workers=workers,
        overwrite=True,
    )


def run_plain(args: argparse.Namespace, source: Path, store: Path) -> dict[str, Any]:
    """The prepare work without Ray or the engine's extras: decode every clip, write each planned shard."""
    from raydd.data.decode import decode_clip
    from raydd.data.ingest import plan_shards
    from raydd.data.layouts import index_source
    from raydd.data.shards import write_clip_shard
    from raydd.layout import StoreLayout
    from raydd.storage import resolve

    config = _config(args, source, store, 1)
    spec = config.spec()
    started, cpu_started, thread_started = time.perf_counter(), time.process_time(), time.thread_time()
    index = index_source(spec, resolve(str(source)))
    plans = plan_shards(spec, index, config.shard_mb)
    out = Path(StoreLayout.of(str(store)).dataset(spec.name).path)
    out.mkdir(parents=True, exist_ok=True)
    decode_s = write_s = 0.0
    clips = 0
    for plan in plans:
        t0 = time.perf_counter()
        frames = []
        for clip in plan.clips:
            with open(clip.source, "rb") as handle:
                frames.append(decode_clip(handle, spec.num_frames, spec.height, spec.width))
        stacked = np.stack(frames)
        labels = np.asarray([c.label for c in plan.clips], np.int32)
        t1 = time.perf_counter()
        with open(out / plan.name, "wb") as handle:
            write_clip_shard(handle, stacked, labels, [c.source for c in plan.clips], [])
        decode_s += t1 - t0
        write_s += time.perf_counter() - t1
        clips += len(plan.clips)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "clips": clips,
        "shards": len(plans),
        "decode_seconds": decode_s,
        "write_seconds": write_s,
        "cpu_seconds": time.process_time() - cpu_started,
        # CPU of threads other than this one (libswscale/libavcodec helper threads): should be ~0
        "helper_thread_cpu_seconds": (time.process_time() - cpu_started) - (time.thread_time() - thread_started),
    }


def run_engine(args: argparse.Namespace, source: Path, store: Path) -> dict[str, Any]:
    """``prepare`` without Ray: the same ``write_shard`` task bodies run one after another in this process."""
    from raydd.data.ingest import assemble_manifest, plan_shards, write_shard
    from raydd.data.layouts import index_source
    from raydd.layout import StoreLayout
    from raydd.storage import resolve, write_manifest

    config = _config(args, source, store, 1)
    spec = config.spec()
    started, cpu_started = time.perf_counter(), time.process_time()
    src = resolve(str(source))
    index = index_source(spec, src)
    plans = plan_shards(spec, index, config.shard_mb)
    target = StoreLayout.of(str(store)).dataset(spec.name)
    results = [write_shard(spec, plan, target.uri, src.uri, len(index.classes)) for plan in plans]
    manifest = assemble_manifest(spec, index, sorted(results, key=lambda r: r.record.name), config.max_bad_fraction)
    write_manifest(target, manifest)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "clips": sum(r.record.rows for r in results),
        "shards": len(plans),
        "task_seconds": [r.seconds for r in results],
        "cpu_seconds": time.process_time() - cpu_started,
    }


def run_ray(args: argparse.Namespace, source: Path, store: Path, workers: int) -> dict[str, Any]:
    """``raydd.data.preparation.prepare`` with ``workers`` writers; captures each shard task's result for diagnosis."""
    import raydd.data.preparation as entry

    captured: list = []
    original = entry.assemble_manifest

    def capture(spec, index, results, max_bad_fraction):  # noqa: ANN001, ANN202 - pass-through spy
        captured.extend(results)
        return original(spec, index, results, max_bad_fraction)

    entry.assemble_manifest = capture
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(sys.stderr):  # prepare's one-line summary; the table owns stdout
            manifest = entry.prepare(_config(args, source, store, workers))
        seconds = time.perf_counter() - started
    finally:
        entry.assemble_manifest = original
    reused = sum(1 for r in captured if r.reused)
    if reused:
        raise RuntimeError(f"{reused} shards were reused instead of written: the benchmark needs a fresh store per run")
    task_seconds = [r.seconds for r in captured]
    return {
        "seconds": seconds,
        "clips": sum(s.rows for s in manifest.shards),
        "shards": len(manifest.shards),
        "task_seconds": task_seconds,
        "driver_cpu_seconds": time.process_time() - cpu_started,
        # busy = sum of time spent inside write_shard / (workers x wall): what is left is Ray + driver + imbalance
        "worker_busy_fraction": sum(task_seconds) / (workers * seconds),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["seconds"] for r in runs]
    best = min(runs, key=lambda r: r["seconds"])
    return {
        "seconds": best["seconds"],
        "median_seconds": statistics.median(times),
        "all_seconds": times,
        "clips": best["clips"],
        "clips_per_s": best["clips"] / best["seconds"],
        "median_clips_per_s": best["clips"] / statistics.median(times),
        "best_run": best,
    }


def bench_prepare(args: argparse.Namespace, source: Path, work: Path) -> dict[str, Any]:
    import ray

    from raydd.layout import StoreLayout

    stores = iter(range(10_000))

    def fresh_store() -> Path:
        path = work / f"store{next(stores):03d}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    def drop(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=args.dashboard, configure_logging=False)
    ray_init_s = time.perf_counter() - started

    # Warm-up: starts (and imports raydd/av/pyarrow in) every worker process, and warms the page cache.
    warmups = []
    for _ in range(2):
        store = fresh_store()
        warmups.append(run_ray(args, source, store, 2)["seconds"])
        drop(store)
    plain_warm = fresh_store()
    run_plain(args, source, plain_warm)  # warms the driver process too (imports, codec init)
    drop(plain_warm)

    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "engine": [], "ray-1": [], "ray-2": []}
    last_ray2: Path | None = None
    quiet_budget = {"left": float(args.max_wait)}
    for _ in range(args.repeats):  # interleaved, so drift (thermal, page cache) hits every variant alike
        for name in runs:
            for attempt in range(2):  # a run disturbed by other processes is redone once, if the wait budget allows
                store = fresh_store()
                load_before = wait_until_quiet(quiet_budget)
                with CpuMeter() as meter:
                    if name == "plain":
                        run = run_plain(args, source, store)
                    elif name == "engine":
                        run = run_engine(args, source, store)
                    else:
                        run = run_ray(args, source, store, int(name.split("-")[1]))
                run["cpu_cores"] = meter.cores
                run["machine_load_before"] = load_before
                noisy = meter.cores["other processes"] > NOISY_CORES
                if noisy:
                    print(
                        f"warning: background load of {meter.cores['other processes']:.2f} cores during {name}",
                        file=sys.stderr,
                    )
                if not noisy or attempt == 1 or quiet_budget["left"] <= 0:
                    break
                drop(store)
            runs[name].append(run)
            if name == "ray-2":  # keep the last one for the read test
                if last_ray2 is not None:
                    drop(last_ray2)
                last_ray2 = store
            else:
                drop(store)
    results = {name: _summary(r) for name, r in runs.items()}
    results["quiet_wait_seconds"] = args.max_wait - max(quiet_budget["left"], 0.0)
    results["ray_init_seconds"] = ray_init_s
    results["warmup_seconds"] = warmups  # the first includes starting and importing in the worker processes
    results["prepared_uri"] = StoreLayout.of(str(last_ray2)).dataset("folder").uri
    return results


# ------------------------------------------------------------------------------------------ reading


def write_synthetic(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A dataset of random uint8 clips (``args.read_mb`` MiB of frames) in shards of ``args.read_shard_mb`` MiB."""
    from raydd.data.ingest import DATASET_KIND
    from raydd.data.shards import write_clip_shard
    from raydd.data.specs import get_spec
    from raydd.storage import Manifest, ShardRecord, resolve, write_manifest

    spec = dataclasses.replace(
        get_spec("folder"), name="synthetic", num_frames=args.clip_frames, height=args.clip_size, width=args.clip_size
    )
    n_clips = max(1, int(args.read_mb * MiB) // spec.clip_bytes)
    per_shard = max(1, int(args.read_shard_mb * MiB) // spec.clip_bytes)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for number, start in enumerate(range(0, n_clips, per_shard)):
        count = min(per_shard, n_clips - start)
        frames = rng.integers(0, 256, size=(count, *spec.clip_shape), dtype=np.uint8)
        labels = (np.arange(start, start + count) % 10).astype(np.int32)
        name = f"train-{number:05d}.arrow"
        with open(folder / name, "wb") as handle:
            write_clip_shard(handle, frames, labels, [f"synthetic:{i}" for i in range(start, start + count)], [])
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        records.append(
            ShardRecord(name=name, rows=count, bytes=(folder / name).stat().st_size, sha256=digest, group="train")
        )
    metadata = {
        "spec": spec.to_dict(),
        "classes": [f"c{i}" for i in range(10)],
        "clip_shape": list(spec.clip_shape),
        "clips": {"train": n_clips},
        "train_mean": [0.5] * 3,
        "train_std": [0.29] * 3,
    }
    write_manifest(resolve(str(folder)), Manifest(kind=DATASET_KIND, shards=tuple(records), metadata=metadata))
    return {"clips": n_clips, "shards": len(records), "bytes": int(sum(r.bytes for r in records))}


def read_throughput(uri: str, args: argparse.Namespace) -> dict[str, Any]:
    """MB/s of frames delivered by ``PreparedVideos.batch`` over whole epochs, sequential and shuffled."""
    import torch

    from raydd.data import open_prepared

    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for order in ("sequential", "shuffled"):
        t0 = time.perf_counter()
        videos = open_prepared(uri).split("train")  # fresh open: the first epoch faults the maps in
        open_s = time.perf_counter() - t0
        n = len(videos)
        epochs, first_seconds = [], 0.0
        for _ in range(args.read_epochs):
            indices = np.arange(n) if order == "sequential" else rng.permutation(n)
            delivered = 0
            started = time.perf_counter()
            for start in range(0, n, args.batch):
                frames, labels = videos.batch(indices[start : start + args.batch])
                assert isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8
                delivered += frames.numel()
            seconds = time.perf_counter() - started
            first_seconds = first_seconds or seconds
            epochs.append(delivered / MB / seconds)
        out[order] = {
            "open_seconds": open_s,
            "clips": n,
            "bytes_per_epoch": delivered,
            "mb_per_s_epochs": epochs,
            "first_epoch_mb_per_s": epochs[0],
            "mb_per_s": statistics.median(epochs[1:] or epochs),
            "first_epoch_with_open_mb_per_s": delivered / MB / (open_s + first_seconds),
        }
    return out


def memcpy_reference(mb: float = 256) -> float:
    """MB/s of one large numpy copy on this machine: the ceiling a batch gather (two copies) works against."""
    src = np.ones(int(mb * MB), np.uint8)
    dst = np.empty_like(src)
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        np.copyto(dst, src)
        best = max(best, src.nbytes / MB / (time.perf_counter() - started))
    return best


# ------------------------------------------------------------------------------------------ report


def _row(metric: str, value: str, target: str = "", status: str = "") -> str:
    return f"{metric:<46} {value:>16}  {target:>12}  {status}"


def report(res: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    prep, read = res["prepare"], res["read"]
    plain, engine, r1, r2 = prep["plain"], prep["engine"], prep["ray-1"], prep["ray-2"]
    speedup = r1["seconds"] / r2["seconds"]
    overhead = 1 - plain["seconds"] / r1["seconds"]
    overhead_engine = 1 - engine["seconds"] / r1["seconds"]
    seq = read["synthetic"]["sequential"]["mb_per_s"]
    shuf = read["synthetic"]["shuffled"]["mb_per_s"]
    targets = {
        "speedup_2_vs_1_worker": {
            "value": speedup,
            "target": f">= {TARGET_SPEEDUP}",
            "pass": speedup >= TARGET_SPEEDUP,
        },
        "ray_overhead_vs_plain": {
            "value": overhead,
            "target": f"<= {TARGET_OVERHEAD}",
            "pass": overhead <= TARGET_OVERHEAD,
        },
        "read_sequential_mb_per_s": {"value": seq, "target": f">= {TARGET_READ_MBPS}", "pass": seq >= TARGET_READ_MBPS},
        "read_shuffled_mb_per_s": {"value": shuf, "target": f">= {TARGET_READ_MBPS}", "pass": shuf >= TARGET_READ_MBPS},
    }

    def status(key: str) -> str:
        return "PASS" if targets[key]["pass"] else "FAIL"

    cfg = res["config"]
    n_shards = r2["best_run"]["shards"]
    lines = [
        f"prepare: {r2['clips']} clips from {cfg['videos']} {cfg['codec']} videos "
        f"({cfg['video_frames']} frames {cfg['video_width']}x{cfg['video_height']}) -> "
        f"{cfg['clip_frames']}x{cfg['clip_size']}x{cfg['clip_size']}, {n_shards} shards of <= {cfg['shard_mb']:.2f} "
        "MiB; "
        f"best of {cfg['repeats']}; {res['environment']['cpus']} CPUs",
        _row("metric", "value", "target", "status"),
        _row("-" * 46, "-" * 16, "-" * 12, "------"),
        _row("plain loop (decode_clip + write_clip_shard)", f"{plain['clips_per_s']:.1f} clips/s"),
        _row("engine loop (write_shard in-process, no Ray)", f"{engine['clips_per_s']:.1f} clips/s"),
        _row("raydd.prepare, 1 Ray worker", f"{r1['clips_per_s']:.1f} clips/s"),
        _row("raydd.prepare, 2 Ray workers", f"{r2['clips_per_s']:.1f} clips/s"),
        _row(
            "speedup 2 workers / 1 worker",
            f"{speedup:.2f} x",
            f">= {TARGET_SPEEDUP:.2f} x",
            status("speedup_2_vs_1_worker"),
        ),
        _row(
            "Ray overhead vs plain loop (1 - plain/ray-1)",
            f"{overhead:.1%}",
            f"<= {TARGET_OVERHEAD:.0%}",
            status("ray_overhead_vs_plain"),
        ),
        _row("  of which engine extras (1 - plain/engine)", f"{1 - plain['seconds'] / engine['seconds']:.1%}"),
        _row("  Ray itself (1 - engine/ray-1)", f"{overhead_engine:.1%}"),
        _row(
            "write_shard time in Ray worker vs in-process",
            f"{sum(r1['best_run']['task_seconds']) / sum(engine['best_run']['task_seconds']) - 1:+.1%} (1w) "
            f"{sum(r2['best_run']['task_seconds']) / sum(engine['best_run']['task_seconds']) - 1:+.1%} (2w)",
        ),
        _row(
            "plain loop CPU in helper threads (swscale...)",
            f"{plain['best_run']['helper_thread_cpu_seconds'] / plain['best_run']['cpu_seconds']:.0%} of its CPU",
        ),
        _row(
            "worker busy fraction, 1 / 2 workers",
            f"{r1['best_run']['worker_busy_fraction']:.0%} / {r2['best_run']['worker_busy_fraction']:.0%}",
        ),
        _row(
            "background load (other processes), max",
            f"{max(v['best_run']['cpu_cores']['other processes'] for v in (plain, engine, r1, r2)):.2f} cores",
            f"<= {NOISY_CORES:.2f}",
            "ok"
            if max(v["best_run"]["cpu_cores"]["other processes"] for v in (plain, engine, r1, r2)) <= NOISY_CORES
            else "NOISY",
        ),
        _row(
            "cores used in ray-2: workers/ray system/driver",
            "/".join(f"{r2['best_run']['cpu_cores'][g]:.2f}" for g in ("ray workers", "ray system", "driver")),
        ),
        _row("ray.init / first (warm-up) run", f"{prep['ray_init_seconds']:.1f} s / {prep['warmup_seconds'][0]:.1f} s"),
        _row("read prepared train split, sequential", f"{read['prepared']['sequential']['mb_per_s']:.0f} MB/s"),
        _row("read prepared train split, shuffled", f"{read['prepared']['shuffled']['mb_per_s']:.0f} MB/s"),
        _row(
            f"read synthetic {read['synthetic_info']['bytes'] / MB:.0f} MB, sequential (batch {cfg['batch']})",
            f"{seq:.0f} MB/s",
            f">= {TARGET_READ_MBPS:.0f}",
            status("read_sequential_mb_per_s"),
        ),
        _row(
            f"read synthetic {read['synthetic_info']['bytes'] / MB:.0f} MB, shuffled (batch {cfg['batch']})",
            f"{shuf:.0f} MB/s",
            f">= {TARGET_READ_MBPS:.0f}",
            status("read_shuffled_mb_per_s"),
        ),
        _row(
            "  first epoch after open, seq / shuffled",
            f"{read['synthetic']['sequential']['first_epoch_mb_per_s']:.0f} / "
            f"{read['synthetic']['shuffled']['first_epoch_mb_per_s']:.0f}",
        ),
        _row(
            "  open + first epoch, seq / shuffled",
            f"{read['synthetic']['sequential']['first_epoch_with_open_mb_per_s']:.0f} / "
            f"{read['synthetic']['shuffled']['first_epoch_with_open_mb_per_s']:.0f}",
        ),
        _row(
            "  open_prepared().split() time, seq / shuffled",
            f"{read['synthetic']['sequential']['open_seconds']:.2f} / "
            f"{read['synthetic']['shuffled']['open_seconds']:.2f} s",
        ),
        _row("  memcpy reference (one np.copyto)", f"{read['memcpy_mb_per_s']:.0f} MB/s"),
    ]
    return "\n".join(lines), targets


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="small smoke run (fewer, smaller videos; one repeat; 64 MiB read test)"
    )
    parser.add_argument("--videos", type=int, default=None, help="videos to generate (default 192, quick 48)")
    parser.add_argument("--classes", type=int, default=6, help="class folders (default 6)")
    parser.add_argument(
        "--video-frames", type=int, default=None, help="frames per generated video (default 64, quick 48)"
    )
    parser.add_argument("--video-width", type=int, default=None, help="generated width (default 320, quick 160)")
    parser.add_argument("--video-height", type=int, default=None, help="generated height (default 240, quick 120)")
    parser.add_argument(
        "--codec", default="libx264", choices=("libx264", "mpeg4"), help="video codec (default libx264)"
    )
    parser.add_argument("--clip-frames", type=int, default=16, help="frames per prepared clip (default 16)")
    parser.add_argument("--clip-size", type=int, default=112, help="prepared clip height and width (default 112)")
    parser.add_argument(
        "--shards", type=int, default=None, help="aim for about this many shards, sets --shard-mb (default 16, quick 8)"
    )
    parser.add_argument("--shard-mb", type=float, default=None, help="shard size in MiB (overrides --shards)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs of each variant, best reported (default 3, quick 1)"
    )
    parser.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the Ray dashboard, as `python -m raydd.prepare` does (default on)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        help="seconds in all to wait for other processes to go quiet before timed runs (default 60)",
    )
    parser.add_argument(
        "--read-mb",
        type=float,
        default=None,
        help="MiB of frames in the synthetic read dataset (default 512, quick 64)",
    )
    parser.add_argument("--read-shard-mb", type=float, default=64.0, help="MiB per synthetic shard (default 64)")
    parser.add_argument(
        "--read-epochs", type=int, default=4, help="epochs per read order; the first is reported separately (default 4)"
    )
    parser.add_argument("--batch", type=int, default=64, help="clips per .batch() call (default 64)")
    parser.add_argument(
        "--workdir", default=None, help="where videos and stores go (default: a new temp dir, removed at the end)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument(
        "--output",
        default=str(ROOT / "benchmarks" / "results" / "prepare.json"),
        help="JSON results file (default benchmarks/results/prepare.json)",
    )
    args = parser.parse_args(argv)
    defaults = {
        "videos": (192, 48),
        "video_frames": (64, 48),
        "video_width": (320, 160),
        "video_height": (240, 120),
        "repeats": (3, 1),
        "read_mb": (512.0, 64.0),
        "shards": (16, 8),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.shard_mb is None:
        clip_bytes = args.clip_frames * args.clip_size * args.clip_size * 3
        per_shard = max(1, round(args.videos / args.shards))
        args.shard_mb = (per_shard * clip_bytes + 1) / MiB  # exactly per_shard clips (plan_shards floors)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="raydd-bench-prepare-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        source = work / "videos"
        shutil.rmtree(source, ignore_errors=True)
        print(f"generating {args.videos} videos in {source} ...", file=sys.stderr)
        videos = generate_videos(source, args)
        print(f"  {videos['bytes'] / MB:.1f} MB in {videos['seconds']:.1f} s", file=sys.stderr)

        prepare_results = bench_prepare(args, source, work)

        import ray

        ray.shutdown()  # the read test runs in this process alone
        print("read throughput ...", file=sys.stderr)
        synthetic = work / "synthetic"
        info = write_synthetic(synthetic, args)
        read = {
            "prepared": read_throughput(prepare_results["prepared_uri"], args),
            "synthetic": read_throughput(str(synthetic), args),
            "synthetic_info": info,
            "memcpy_mb_per_s": memcpy_reference(),
        }
        import av
        import pyarrow
        import ray as ray_module
        import torch

        results: dict[str, Any] = {
            "config": {k: v for k, v in vars(args).items() if k not in ("output",)},
            "environment": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "ray": ray_module.__version__,
                "av": av.__version__,
                "torch": torch.__version__,
                "pyarrow": pyarrow.__version__,
                "numpy": np.__version__,
            },
            "videos": videos,
            "prepare": prepare_results,
            "read": read,
        }
        table, targets = report(results)
        results["targets"] = targets
        results["total_seconds"] = time.perf_counter() - started
        print(table)
        print(f"total {results['total_seconds']:.0f} s")
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {output}")
        return 0
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
