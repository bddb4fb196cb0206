"""Benchmark distillation: seconds per iteration and peak memory of DM and MTT, naive and static-dynamic.

    .venv/bin/python benchmarks/distill.py --quick                       # smoke run of every section, nothing judged
    .venv/bin/python benchmarks/distill.py --sections builtin,reference,workers,mtt-memory   # the CPU targets
    .venv/bin/python benchmarks/distill.py --sections reference --reference-tree /tmp/ref-tree  # against the reference
    .venv/bin/python benchmarks/distill.py --sections miniucf  # hours on 2 cores (one DM iteration: ~35 TFLOP)
    python benchmarks/distill.py --device cuda --sections builtin,miniucf,reference,mtt-memory   # no Ray needed

Sections (``--sections``, comma-separated; run in this order):

builtin     DM and MTT, naive and static-dynamic, at the built-in dataset's size (10 classes, 8x32x32) with the
            shipped builtin presets (their network widths). Static-dynamic rows time stage 2 (dynamic memories
            + H on random stage-1 images): stage 1 is image distillation. MTT rows: plain (raydd's default).
miniucf     The same at MiniUCF's shape (50 classes, 16x112x112, IPC 1) with the Suppl. Table 10/11 presets
            (DM batch_real 64; MTT syn_steps 10, batch_syn 50). Target: memory-bounded MTT peaks within 24 GB.
            Plain MTT runs only on CUDA or with ``--allow-big`` (on CPU it needs ~30+ GB).
reference   raydd against the reference implementation, both timed in this run, at the reference's settings
            (10 classes, 8x64x64, IPC 1, its ConvNet3D = MiniC3D width 128; DM batch_real 64; MTT syn_steps
            10, batch_syn 10, learned lr). ``--reference-tree DIR`` (the exported github:yuz1wan/video_distillation)
            times the reference with the shared harness (``--reference-harness``, time_official.py; see
            benchmarks/reference_harness.py); per row, ``--rounds`` rounds of (raydd process, reference
            process), so that a shared machine's load falls on both alike. Target: raydd / reference <= 0.5
            (the ratio of the medians; judged on CPU only). Without ``--reference-tree`` the reference is not
            run and nothing is judged. ``--clock cpu`` compares CPU seconds of each process (all threads)
            instead of wall seconds: on a machine loaded far beyond its cores. The section also measures the
            machine's peak GFLOP/s (benchmarks/peak_flops.py: matmul and conv3d, fp32 and bf16) at its start
            and end, and shows each row's achieved GFLOP/s (FLOPs of one iteration counted with
            ``FlopCounterMode``, for raydd and for the reference) against the peak of the row's precision.
            raydd runs with ``--precision`` (default auto). ``--profile`` adds where raydd's time goes in each
            row: one more iteration under torch.profiler, its operators' self time grouped by kind
            (benchmarks/op_profile.py: convolution forward / backward / transposed, matmul, element-wise ...).
workers     Matching samples per second of ``fit_stage`` on a local Ray cluster (``ray.init(num_cpus=2)``)
            with 2 Ray Train workers against 1 (1 CPU each; the first ``--warmup`` iterations excluded), naive
            DM and MTT at builtin size. Target >= 1.6 x. The single-process loop on 1 thread is shown for
            reference. The only section that imports Ray.
mtt-memory  MTT (naive) peak memory for syn_steps 10/20/40, plain against memory-bounded.

Every measured configuration runs in its own process (``--one JSON``), so that its peak memory is its own:
on CPU the peak RSS (``ru_maxrss``) and its rise above a baseline taken after the imports and after the
process has paged the whole dataset in; on CUDA ``torch.cuda.max_memory_allocated`` and its rise above the
allocation before the stage is built. Seconds per iteration: the median of ``--iterations`` timed
iterations after ``--warmup`` untimed ones (MiniUCF: ``--miniucf-iterations`` after at most one); the CPU
seconds beside them show how much of the wall time the process really ran (a shared machine shows less).
Inputs are random but seeded: uint8 clips written with raydd's shard and manifest writers, expert
trajectories that drift from a real initialisation by seeded noise, and random stage-1 images, all cached
under ``--cache``.

``--quick`` runs 1 timed iteration per row and judges nothing; on CPU it also shrinks the reference and
MiniUCF rows to a smoke test (DM batch_real, MTT syn_steps / batch_syn, SPC = DPC = 1) and names the
shrunk settings in the row.

Prints a table (and the reference section's own: seconds of both, ratio, GFLOP/s against the peak) and
writes benchmarks/results/distill.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import op_profile
import reference_harness
import torch
from torch.utils.flop_counter import FlopCounterMode

from raydd.classes import class_major_labels
from raydd.data.reader import open_prepared
from raydd.data.shards import DATASET_KIND, write_clip_shard
from raydd.data.specs import DatasetSpec
from raydd.devices import PRECISIONS, pick_device
from raydd.distill.artifact import static_exists, write_static
from raydd.distill.loop import SingleProcess
from raydd.distill.methods.base import low_precision
from raydd.distill.methods.catalog import low_precision_of
from raydd.distill.presets import Preset, table_preset
from raydd.distill.stages import DYNAMIC, NAIVE, StageSpec, build_stage
from raydd.experts.trajectories import (
    ModelSpec,
    TrajectoryRecord,
    experts_manifest,
    flatten_parameters,
    shard_name,
    write_trajectory,
)
from raydd.storage import Location, Manifest, ShardRecord, atomic_writer, manifest_or_none, resolve, write_manifest

SECTIONS = ("builtin", "miniucf", "reference", "workers", "mtt-memory")
GB = 1e9
MINIUCF_LIMIT_GB = 24.0
TARGET_RATIO = 0.5  # a ratio, not seconds: raydd's time per iteration / the reference's, both timed in this run
REFERENCE_ROWS = (("dm", "naive"), ("dm", "static-dynamic"), ("mtt", "naive"), ("mtt", "static-dynamic"))
WORKERS_TARGET = 1.6  # samples/s with 2 Ray Train workers / with 1
MAX_START_EPOCH = 2  # few epochs to write: which epoch a sample starts at does not change its cost
SHARD_BYTES = 256 << 20
RESULT = "RESULT "


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    classes: int
    frames: int
    side: int
    clips_per_class: int  # training clips; DM draws batch_real per class, with replacement beyond this

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, self.side, self.side, 3)

    def __str__(self) -> str:
        return f"{self.classes} classes, {self.frames}x{self.side}x{self.side}"


BUILTIN = Shape("builtin", 10, 8, 32, 30)
REFERENCE = Shape("reference", 10, 8, 64, 64)
MINIUCF = Shape("miniucf", 50, 16, 112, 8)
REFERENCE_HARNESS_SHAPE = {"classes": REFERENCE.classes, "frames": REFERENCE.frames, "size": REFERENCE.side}


@dataclasses.dataclass(frozen=True)
class Job:
    """One measured configuration: what ``--one`` receives as JSON."""

    method: str
    stage: str  # NAIVE or DYNAMIC
    dataset_uri: str
    preset: dict[str, Any]
    experts_uri: str | None
    static_uri: str | None
    memory_bounded: bool
    device: str
    threads: int | None
    warmup: int
    iterations: int
    count_flops: bool = False  # count one iteration's FLOPs with FlopCounterMode: the first warm-up, else one more
    profile: bool = False  # one more iteration under torch.profiler: its time by kind of operator (op_profile)


# ---- inputs: random but seeded, written with raydd's own writers --------------------------------------------


def write_dataset(cache: Location, shape: Shape) -> str:
    folder = cache.child(
        "datasets", f"random-{shape.classes}c-{shape.frames}x{shape.side}x{shape.side}-{shape.clips_per_class}"
    )
    if manifest_or_none(folder) is not None:
        return folder.uri
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(shape.classes, dtype=np.int32), shape.clips_per_class))
    clip_bytes = int(np.prod(shape.clip_shape))
    per_shard = max(1, SHARD_BYTES // clip_bytes)
    records = []
    for number, start in enumerate(range(0, len(labels), per_shard)):
        chunk = labels[start : start + per_shard]
        frames_NTHWC = rng.integers(0, 256, (len(chunk), *shape.clip_shape), dtype=np.uint8)
        location = folder.child(f"train-{number:05d}.arrow")
        with atomic_writer(location) as handle:
            write_clip_shard(handle, frames_NTHWC, chunk, [f"random:{start + i}" for i in range(len(chunk))], [])
        records.append(ShardRecord(location.name, len(chunk), handle.bytes_written, handle.hexdigest(), "train"))
    classes = [f"class{c:02d}" for c in range(shape.classes)]
    spec = DatasetSpec(
        name=folder.name,
        layout="folder",
        num_frames=shape.frames,
        height=shape.side,
        width=shape.side,
        classes=tuple(classes),
        description="random uint8 clips (benchmarks/distill.py)",
    )
    uniform_std = float(np.sqrt((256**2 - 1) / 12) / 255)  # of uniform uint8 values, in [0, 1] units
    metadata = {
        "spec": spec.to_dict(),
        "classes": classes,
        "clip_shape": list(shape.clip_shape),
        "clips": {"train": len(labels)},
        "train_mean": [0.5] * 3,
        "train_std": [round(uniform_std, 6)] * 3,
    }
    write_manifest(folder, Manifest(kind=DATASET_KIND, shards=tuple(records), metadata=metadata))
    return folder.uri


def write_experts(
    cache: Location, shape: Shape, width: int, epochs: int, *, num_experts: int = 2, drift: float = 0.002
) -> str:
    """MiniC3D trajectories at ``width`` (MiniC3D (w/2, w, w), as ``network_width`` builds it) that start at a
    real initialisation and drift by seeded noise: MTT reads exactly what trained experts would give it."""
    folder = cache.child("experts", f"{shape.name}-minic3d-w{width}-{epochs}epochs")
    if manifest_or_none(folder) is not None:
        return folder.uri
    spec = ModelSpec.of(
        "minic3d",
        num_classes=shape.classes,
        clip_shape=shape.clip_shape,
        options={"widths": [max(1, width // 2), width, width]},
    )
    records = []
    for expert in range(num_experts):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(expert)
            epochs_P = [flatten_parameters(spec.build())]
        noise = torch.Generator().manual_seed(100 + expert)
        for _ in range(epochs):
            epochs_P.append(epochs_P[-1] + drift * torch.randn(spec.num_params, generator=noise))
        location = folder.child(shard_name(expert))
        with atomic_writer(location) as handle:
            write_trajectory(handle, spec, epochs_P, dtype="float32", metadata={"expert": expert, "seed": expert})
        records.append(
            TrajectoryRecord(
                expert,
                expert,
                ShardRecord(location.name, len(epochs_P), handle.bytes_written, handle.hexdigest()),
                0.0,
                0.0,
                0.0,
            )
        )
    write_manifest(folder, experts_manifest({"model": spec.to_dict()}, records))
    return folder.uri


def write_random_static(cache: Location, shape: Shape, per_class: int) -> str:
    """Stage 1's still images (random): stage 2's cost does not depend on what they show."""
    folder = cache.child("static", f"{shape.name}-spc{per_class}")
    if not static_exists(folder.uri):
        images = torch.randn(
            shape.classes * per_class, 3, shape.side, shape.side, generator=torch.Generator().manual_seed(0)
        )
        write_static(folder.uri, images, class_major_labels(shape.classes, per_class), {"method": "random"})
    return folder.uri


# ---- one measurement, in its own process ---------------------------------------------------------------------


def max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def measure(job: Job) -> dict[str, Any]:
    if job.threads:
        torch.set_num_threads(job.threads)
    device = pick_device(job.device)
    cuda = device.type == "cuda"
    videos = open_prepared(job.dataset_uri).split("train")
    for start in range(0, len(videos), 16):  # page the mapped shards in: the baseline holds the data, not the work
        videos.batch(np.arange(start, min(start + 16, len(videos))))
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    else:
        baseline = max_rss_bytes()
    spec = StageSpec(
        stage=job.stage,
        method=job.method,
        dataset_uri=job.dataset_uri,
        ipc=1,
        preset=Preset(**job.preset),
        static_uri=job.static_uri,
        experts_uri=job.experts_uri,
        memory_bounded=job.memory_bounded,
        device=job.device,
    )
    distiller = build_stage(spec, SingleProcess(), device)
    seconds, cpu_seconds, losses = [], [], []
    flops = None
    for iteration in range(job.warmup + job.iterations):
        started, cpu_started = time.perf_counter(), time.process_time()
        if job.count_flops and iteration == 0 and job.warmup > 0:  # counted in an untimed warm-up iteration
            with FlopCounterMode(display=False) as counter:
                result = distiller.step(iteration)
            flops = counter.get_total_flops()
        else:
            result = distiller.step(iteration)
        if cuda:
            torch.cuda.synchronize(device)
        if iteration >= job.warmup:
            seconds.append(time.perf_counter() - started)
            cpu_seconds.append(time.process_time() - cpu_started)
        losses.append(result.loss)
    peak = torch.cuda.max_memory_allocated(device) if cuda else max_rss_bytes()
    median = statistics.median(seconds)
    if job.count_flops and flops is None:
        with FlopCounterMode(display=False) as counter:
            distiller.step(job.warmup + job.iterations)
        flops = counter.get_total_flops()
    profiled = op_profile.profile_call(lambda: distiller.step(job.warmup + job.iterations + 1)) if job.profile else None
    return {
        "profile": profiled,
        "seconds": seconds,
        "median_s": median,
        "samples_per_s": result.samples / median,
        "losses": losses,
        "cpu_seconds": cpu_seconds,
        "median_cpu_s": statistics.median(cpu_seconds),
        "peak_bytes": peak,
        "baseline_bytes": baseline,
        "delta_bytes": peak - baseline,
        "memory": "cuda allocated" if cuda else "max rss",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "flops": flops,
        "autocast": str(low_precision(distiller.method, device) or torch.float32)[6:],
    }


def computed_precision(method: str, precision: str, device: torch.device) -> str:
    """What ``--precision`` makes the method compute in on ``device``: bf16 or fp32 (MTT: bf16 only if asked)."""
    return "bf16" if low_precision_of(method, precision, device) else "fp32"


def run_job(job: Job, label: str) -> dict[str, Any]:
    """``measure(job)`` in a fresh process; ``{"error": ...}`` if it failed (out of memory, a raised error)."""
    print(f"  {label} ...", end="", flush=True, file=sys.stderr)
    env = dict(
        os.environ,
        **({"OMP_NUM_THREADS": str(job.threads), "MKL_NUM_THREADS": str(job.threads)} if job.threads else {}),
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(dataclasses.asdict(job))],
        capture_output=True,
        text=True,
        env=env,
    )
    print(f" {time.perf_counter() - started:.0f} s", flush=True, file=sys.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1][len(RESULT) :])
    tail = [line for line in done.stderr.splitlines() if line.strip()]
    reason = tail[-1].strip() if tail else ""
    if done.returncode < 0:
        reason = f"killed by signal {-done.returncode} (out of memory?) {reason}".strip()
    print(f"    failed (rc {done.returncode}): {' | '.join(tail[-5:])}", file=sys.stderr)
    return {"error": reason[:200] or f"exit status {done.returncode}"}


def measure_peak(threads: int | None) -> dict[str, Any]:
    """benchmarks/peak_flops.py in its own process: the machine's peak GFLOP/s, fp32 and bf16."""
    print("  peak GFLOP/s (matmul, conv3d; fp32, bf16) ...", end="", flush=True, file=sys.stderr)
    command = [sys.executable, str(Path(__file__).with_name("peak_flops.py"))] + (
        ["--threads", str(threads)] if threads else []
    )
    done = subprocess.run(command, capture_output=True, text=True)
    print(" done" if done.returncode == 0 else f" failed: {done.stderr[-200:]}", flush=True, file=sys.stderr)
    return json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-200:]}


# ---- sections --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    section: str
    name: str
    result: dict[str, Any] | None = None
    target: str = ""
    status: str = ""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cache = resolve(str(args.cache.resolve()))
        self.device = pick_device(args.device)
        self.cuda = self.device.type == "cuda"
        self.threads = args.threads if args.threads is not None else (2 if self.device.type == "cpu" else None)
        self.rows: list[Row] = []
        self.peaks: list[dict[str, Any]] = []  # benchmarks/peak_flops.py, at the start and end of a section

    def preset(self, method: str, paradigm: str, dataset: str, **overrides: Any) -> Preset:
        preset = table_preset(method, paradigm, dataset, 1)
        assert preset is not None, (method, paradigm, dataset)
        if method == "mtt":
            overrides = {"max_start_epoch": MAX_START_EPOCH, **overrides}
        return dataclasses.replace(preset, **overrides)

    def job(
        self,
        shape: Shape,
        method: str,
        paradigm: str,
        preset: Preset,
        *,
        memory_bounded: bool = False,
        warmup: int | None = None,
        iterations: int | None = None,
        threads: int | None = -1,
    ) -> Job:
        static = write_random_static(self.cache, shape, preset.static_per_ipc) if paradigm == "static-dynamic" else None
        return Job(
            method=method,
            stage=NAIVE if paradigm == "naive" else DYNAMIC,
            dataset_uri=write_dataset(self.cache, shape),
            preset=preset.to_dict(),
            experts_uri=write_experts(
                self.cache, shape, preset.network_width, preset.max_start_epoch + preset.expert_epochs
            )
            if method == "mtt"
            else None,
            static_uri=static,
            memory_bounded=memory_bounded,
            device=self.args.device,
            threads=self.threads if threads == -1 else threads,
            warmup=self.args.warmup if warmup is None else warmup,
            iterations=self.args.iterations if iterations is None else iterations,
        )

    def measure(self, section: str, name: str, job: Job, **row: Any) -> Row:
        result = run_job(job, f"{section}: {name}")
        settings = {
            k: v for k, v in dataclasses.asdict(job).items() if k not in ("dataset_uri", "experts_uri", "static_uri")
        }
        entry = Row(section, name, result, settings=settings, **row)
        if "error" in result:
            entry.status = f"failed: {result['error']}"
        self.rows.append(entry)
        return entry

    @staticmethod
    def label(method: str, paradigm: str, memory_bounded: bool | None = None) -> str:
        name = f"{method.upper()} {paradigm}" + (" (stage 2)" if paradigm == "static-dynamic" else "")
        return (
            name
            if method == "dm" or memory_bounded is None
            else f"{name}, {'memory-bounded' if memory_bounded else 'plain'}"
        )

    def builtin(self) -> None:
        print(f"builtin ({BUILTIN}, builtin presets)", file=sys.stderr)
        for method in ("dm", "mtt"):
            for paradigm in ("naive", "static-dynamic"):
                preset = self.preset(method, paradigm, "builtin")
                self.measure(
                    "builtin",
                    self.label(method, paradigm, False if method == "mtt" else None),
                    self.job(BUILTIN, method, paradigm, preset),
                )

    def shrunk(self, method: str, paradigm: str, dm: dict[str, Any], mtt: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """``--quick`` on CPU: overrides that make a heavy row a smoke test, and the note that says so."""
        if not (self.args.quick and not self.cuda):
            return {}, ""
        overrides = {
            **(dm if method == "dm" else mtt),
            **({"static_per_ipc": 1, "dynamic_per_ipc": 1} if paradigm == "static-dynamic" else {}),
        }
        return overrides, f" [quick: {', '.join(f'{k} {v}' for k, v in overrides.items())}]"

    def heavy_warmup(self) -> int:
        return 0 if self.args.quick and not self.cuda else min(self.args.warmup, 1)

    def reference(self) -> None:
        """raydd against the reference implementation at the reference's settings, both timed in this run:
        per row, ``--rounds`` rounds of (raydd process, reference process), so that load on a shared machine
        falls on both alike; the ratio of the medians over all rounds is judged."""
        harness = self.harness()
        print(
            f"reference ({REFERENCE}, MiniC3D width 128; reference {'timed' if harness else 'not run'})",
            file=sys.stderr,
        )
        self.peaks.append(measure_peak(self.threads))
        quick = self.args.quick and not self.cuda
        rounds = 1 if self.args.quick else self.args.rounds
        timed: set[tuple[str, str, str]] = set()
        for precision in self.args.precision:
            for method, paradigm in REFERENCE_ROWS:
                extra = {"batch_real": 64} if method == "dm" else {"syn_steps": 10, "batch_syn": 10, "learn_lr": True}
                shrink, note = self.shrunk(method, paradigm, {"batch_real": 8}, {"syn_steps": 2})
                preset = self.preset(
                    method, paradigm, "builtin", network_width=128, precision=precision, **{**extra, **shrink}
                )
                computes_in = computed_precision(method, precision, self.device)
                if (method, paradigm, computes_in) in timed:  # this precision computes this row as one before did
                    continue
                timed.add((method, paradigm, computes_in))
                warmup, iterations = (0, 1) if quick else (1, self.args.reference_iterations)
                job = self.job(REFERENCE, method, paradigm, preset, warmup=warmup, iterations=iterations)
                mode = reference_harness.MODES[(method, paradigm)]
                keys = ("batch_real",) if method == "dm" else ("syn_steps", "batch_syn")
                their = {k: getattr(preset, k) for k in keys}
                ours, theirs, loads = [], [], []
                name = f"{self.label(method, paradigm, False if method == 'mtt' else None)}, {computes_in}{note}"
                for number in range(rounds):
                    loads.append(os.getloadavg()[0])
                    first = number == 0
                    measured = dataclasses.replace(job, count_flops=first, profile=first and self.args.profile)
                    ours.append(run_job(measured, f"reference: {name}, raydd"))
                    if harness is not None:
                        print(f"  reference: {name}, reference implementation ...", end="", flush=True, file=sys.stderr)
                        started = time.perf_counter()
                        theirs.append(
                            harness.time(mode, REFERENCE_HARNESS_SHAPE, their, warmup, iterations, self.args.clock)
                        )
                        print(f" {time.perf_counter() - started:.0f} s", flush=True, file=sys.stderr)
                reference_flops = self.reference_flops(harness, mode, their) if harness is not None else None
                self.rows.append(self.compare(name, job, ours, theirs, reference_flops, loads))
        self.peaks.append(measure_peak(self.threads))

    def harness(self) -> reference_harness.Harness | None:
        if self.args.reference_tree is None:
            return None
        harness = reference_harness.Harness(
            self.args.reference_harness, self.args.reference_tree, self.threads or 2, self.args.reference_pythonpath
        )
        harness.check()
        return harness

    def reference_flops(self, harness: reference_harness.Harness, mode: str, settings: dict[str, int]) -> float | None:
        """FLOPs of one reference iteration, counted once and kept in the cache (they depend on the shape only)."""
        cache = Path(self.cache.path) / "reference-flops.json"
        key = json.dumps([mode, REFERENCE_HARNESS_SHAPE, settings], sort_keys=True)
        known = json.loads(cache.read_text()) if cache.exists() else {}
        if key not in known:
            print(f"  reference: counting FLOPs of {mode} ...", end="", flush=True, file=sys.stderr)
            flops = harness.flops(mode, REFERENCE_HARNESS_SHAPE, settings)
            print(" done" if flops else " failed", flush=True, file=sys.stderr)
            if flops is None:
                return None
            known[key] = flops
            cache.write_text(json.dumps(known, indent=1))
        return known[key]

    def compare(
        self,
        name: str,
        job: Job,
        ours: list[dict[str, Any]],
        theirs: list[dict[str, Any]],
        reference_flops: float | None,
        loads: list[float],
    ) -> Row:
        settings = {k: v for k, v in dataclasses.asdict(job).items() if not k.endswith("_uri")}
        failed = [r["error"] for r in ours + theirs if "error" in r]
        if failed:
            return Row("reference", name, {"error": failed[0]}, settings=settings, status=f"failed: {failed[0]}")
        key = "cpu_seconds" if self.args.clock == "cpu" else "seconds"
        seconds = [s for r in ours for s in r[key]]
        result: dict[str, Any] = {
            **{k: ours[0].get(k) for k in ("flops", "autocast", "threads", "device", "profile")},
            "clock": self.args.clock,
            "seconds": seconds,
            "median_s": statistics.median(seconds),
            "wall_seconds": [s for r in ours for s in r["seconds"]],
            "cpu_seconds": [s for r in ours for s in r["cpu_seconds"]],
            "median_cpu_s": statistics.median(s for r in ours for s in r["cpu_seconds"]),
            "peak_bytes": max(r["peak_bytes"] for r in ours),
            "samples_per_s": ours[0]["samples_per_s"],
            "loadavg_1min_per_round": loads,
        }
        peak = self.peak_gflops("bf16" if result["autocast"] == "bfloat16" else "fp32")
        if result["flops"]:
            result["gflops_per_s"] = result["flops"] / result["median_s"] / 1e9
            result["of_peak"] = result["gflops_per_s"] / peak if peak else None
        row = Row("reference", name, result, settings=settings, target=f"ratio <= {TARGET_RATIO}")
        if not theirs:
            row.status = "reference not run (--reference-tree DIR times it)"
            return row
        their_seconds = [s for r in theirs for s in r["times_s"]]
        result["reference_seconds"] = their_seconds
        result["reference_median_s"] = statistics.median(their_seconds)
        result["reference_breakdown_s"] = theirs[-1].get("breakdown_last_s")
        result["reference_flops"] = reference_flops
        if reference_flops:
            result["reference_gflops_per_s"] = reference_flops / result["reference_median_s"] / 1e9
            fp32 = self.peak_gflops("fp32")
            result["reference_of_peak"] = result["reference_gflops_per_s"] / fp32 if fp32 else None
        ratio = result["median_s"] / result["reference_median_s"]
        per_round = [statistics.median(o[key]) / statistics.median(t["times_s"]) for o, t in zip(ours, theirs)]
        result["ratio"], result["ratio_per_round"] = ratio, per_round
        spread = f" (rounds {min(per_round):.2f}-{max(per_round):.2f})" if len(per_round) > 1 else ""
        judged = self.device.type == "cpu" and not self.args.quick
        row.status = (
            f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'} {ratio:.2f} x{spread}"
            if judged
            else f"({ratio:.2f} x; {'quick run' if self.args.quick else 'not on CPU'}: not judged)"
        )
        return row

    def peak_gflops(self, precision: str) -> float | None:
        key = "gflops_per_cpu_s" if self.args.clock == "cpu" else "gflops"
        rates = [p[key][precision]["peak"] for p in self.peaks if key in p]
        return max(rates) if rates else None

    def miniucf(self) -> None:
        print(f"miniucf ({MINIUCF})", file=sys.stderr)
        iterations = self.args.miniucf_iterations or (1 if self.args.quick or not self.cuda else 3)
        timing = {"warmup": self.heavy_warmup(), "iterations": iterations}
        for method in ("dm", "mtt"):
            for paradigm in ("naive", "static-dynamic"):
                quick, note = self.shrunk(method, paradigm, {"batch_real": 2}, {"syn_steps": 2, "batch_syn": 5})
                preset = self.preset(method, paradigm, "miniucf", **quick)
                if method == "dm":
                    self.measure(
                        "miniucf",
                        self.label(method, paradigm) + note,
                        self.job(MINIUCF, method, paradigm, preset, **timing),
                    )
                    continue
                row = self.measure(
                    "miniucf",
                    self.label(method, paradigm, True) + note,
                    self.job(MINIUCF, method, paradigm, preset, memory_bounded=True, **timing),
                )
                row.target = f"peak <= {MINIUCF_LIMIT_GB:.0f} GB"
                if row.result and "error" not in row.result:
                    fits = row.result["peak_bytes"] <= MINIUCF_LIMIT_GB * GB
                    row.status = ("PASS" if fits else "FAIL") if not quick else "(quick: not judged)"
                name = self.label(method, paradigm, False) + note
                if self.cuda or self.args.allow_big:
                    self.measure("miniucf", name, self.job(MINIUCF, method, paradigm, preset, **timing))
                else:
                    self.rows.append(Row("miniucf", name, status="skipped (would exceed RAM; --allow-big runs it)"))

    def mtt_memory(self) -> None:
        shape = {"builtin": BUILTIN, "reference": REFERENCE}[self.args.mtt_memory_shape]
        print(f"mtt-memory ({shape})", file=sys.stderr)
        extra = {"network_width": 128, "batch_syn": 10} if shape is REFERENCE else {}
        for syn_steps in (10, 20, 40):
            plain: Row | None = None
            for bounded in (False, True):
                preset = self.preset("mtt", "naive", "builtin", syn_steps=syn_steps, **extra)
                row = self.measure(
                    "mtt-memory",
                    f"MTT naive, syn_steps {syn_steps}, {'memory-bounded' if bounded else 'plain'}",
                    self.job(shape, "mtt", "naive", preset, memory_bounded=bounded),
                )
                if (
                    bounded
                    and plain
                    and plain.result
                    and row.result
                    and "error" not in plain.result
                    and "error" not in row.result
                ):
                    row.status = (
                        f"peak rise {row.result['delta_bytes'] / max(1, plain.result['delta_bytes']):.2f} x plain"
                    )
                plain = row

    def workers(self) -> None:
        import ray

        from raydd.distill.ray_train import RunSettings, fit_stage

        print(f"workers ({BUILTIN}, builtin presets, Ray Train on ray.init(num_cpus=2))", file=sys.stderr)
        warmup, iterations = max(1, self.args.warmup), max(2, self.args.iterations)
        runs = Path(tempfile.mkdtemp(prefix="raydd-bench-distill-runs-"))
        jobs = {
            method: self.job(BUILTIN, method, "naive", self.preset(method, "naive", "builtin"), threads=1)
            for method in ("dm", "mtt")
        }
        for method, job in jobs.items():
            self.measure("workers", f"{method.upper()} naive, single process, 1 thread", job)
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        try:
            for method, job in jobs.items():
                rates = {}
                for count in (1, 2):
                    spec = StageSpec(
                        stage=NAIVE,
                        method=method,
                        dataset_uri=job.dataset_uri,
                        ipc=1,
                        preset=Preset(**job.preset),
                        experts_uri=job.experts_uri,
                        device=self.args.device,
                    )
                    run = RunSettings(
                        iterations=warmup + iterations,
                        checkpoint_every=warmup + iterations,
                        workers=count,
                        cpus_per_worker=1,
                        log_every=10**9,
                    )
                    print(
                        f"  workers: {method} naive, {count} Ray Train worker(s) ...",
                        end="",
                        flush=True,
                        file=sys.stderr,
                    )
                    started = time.perf_counter()
                    try:
                        history = fit_stage(spec, run, runs=resolve(str(runs)), name=f"{method}-{count}-workers")[
                            "history"
                        ]
                    except Exception as error:  # noqa: BLE001 - one failed row, not a failed benchmark
                        print(f" failed: {error}", file=sys.stderr)
                        self.rows.append(
                            Row(
                                "workers",
                                f"{method.upper()} naive, {count} Ray Train worker(s)",
                                {"error": str(error)[:200]},
                                status=f"failed: {str(error)[:120]}",
                            )
                        )
                        continue
                    print(f" {time.perf_counter() - started:.0f} s", flush=True, file=sys.stderr)
                    seconds, samples = history["seconds"][warmup:], history["samples"][warmup:]
                    rates[count] = sum(samples) / sum(seconds)
                    result = {
                        "seconds": seconds,
                        "median_s": statistics.median(seconds),
                        "samples_per_s": rates[count],
                        "workers": count,
                        "warmup_excluded": warmup,
                        "wall_s": time.perf_counter() - started,
                    }
                    self.rows.append(
                        Row(
                            "workers",
                            f"{method.upper()} naive, {count} Ray Train worker(s)",
                            result,
                            settings={"workers": count, "cpus_per_worker": 1, "preset": job.preset},
                        )
                    )
                if len(rates) == 2:
                    speedup = rates[2] / rates[1]
                    verdict = f"{'PASS' if speedup >= WORKERS_TARGET else 'FAIL'} {speedup:.2f} x"
                    self.rows.append(
                        Row(
                            "workers",
                            f"{method.upper()} naive, speedup 2 workers / 1",
                            {"speedup": speedup},
                            target=f">= {WORKERS_TARGET} x",
                            status=verdict if not self.args.quick else f"({speedup:.2f} x; quick run: not judged)",
                        )
                    )
        finally:
            ray.shutdown()
            shutil.rmtree(runs, ignore_errors=True)


# ---- output -----------------------------------------------------------------------------------------------------


def _size(result: dict[str, Any] | None, key: str) -> str:
    if not result or key not in result:
        return ""
    value = result[key]
    return f"{value / GB:.2f} GB" if abs(value) >= 0.1 * GB else f"{value / 1e6:.0f} MB"


def print_table(rows: list[Row]) -> None:
    header = ("section", "configuration", "s/iter", "cpu s/iter", "samples/s", "peak", "peak rise", "target", "status")
    lines = []
    for row in rows:
        r = row.result or {}
        lines.append(
            (
                row.section,
                row.name,
                f"{r['median_s']:.3f}" if "median_s" in r else "",
                f"{r['median_cpu_s']:.3f}" if "median_cpu_s" in r else "",
                f"{r['samples_per_s']:.2f}" if "samples_per_s" in r else "",
                _size(r, "peak_bytes"),
                _size(r, "delta_bytes"),
                row.target,
                row.status,
            )
        )
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, *lines]:
        print(
            "  ".join(
                f"{cell:<{w}}" if i < 2 or i >= 7 else f"{cell:>{w}}" for i, (cell, w) in enumerate(zip(line, widths))
            ).rstrip()
        )


def print_reference(bench: Bench) -> None:
    """The reference section's own table: seconds of both, their ratio, achieved GFLOP/s against the peak."""
    rows = [row for row in bench.rows if row.section == "reference"]
    if not rows:
        return
    fp32, bf16 = bench.peak_gflops("fp32"), bench.peak_gflops("bf16")
    loads = [load for row in rows for load in (row.result or {}).get("loadavg_1min_per_round", [])]
    print(
        f"\nreference section ({REFERENCE}, {bench.threads or torch.get_num_threads()} threads, {bench.args.clock} "
        f"clock): raydd and the reference timed in alternating processes; peak {fp32 or 0:.0f} fp32, "
        f"{bf16 or 0:.0f} bf16 {'GFLOP per CPU-s' if bench.args.clock == 'cpu' else 'GFLOP/s'} "
        f"(best of matmul/conv3d); load average (1 min) {min(loads, default=0):.1f}-{max(loads, default=0):.1f} "
        f"over the rounds"
    )
    unit = "GFLOP per CPU-s" if bench.args.clock == "cpu" else "GFLOP/s"
    seconds = "CPU s" if bench.args.clock == "cpu" else "s"
    header = (
        "row",
        "precision",
        f"raydd {seconds}",
        f"reference {seconds}",
        "ratio",
        f"raydd {unit}",
        f"reference {unit}",
        "status",
    )
    lines = []
    for row in rows:
        r = row.result or {}

        def rate(key: str, share: str, r: dict[str, Any] = r) -> str:
            return f"{r[key]:.0f} ({100 * r[share]:.0f}% peak)" if r.get(key) and r.get(share) else ""

        lines.append(
            (
                row.name,
                r.get("autocast", ""),
                f"{r['median_s']:.2f}" if "median_s" in r else "",
                f"{r['reference_median_s']:.2f}" if "reference_median_s" in r else "not run",
                f"{r['ratio']:.2f}" if "ratio" in r else "",
                rate("gflops_per_s", "of_peak"),
                rate("reference_gflops_per_s", "reference_of_peak"),
                row.status,
            )
        )
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, *lines]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(line, widths)).rstrip())
    print_profiles(rows)


def print_profiles(rows: list[Row]) -> None:
    """Where each profiled raydd row's time goes: share of the profiled iteration's self time per kind of operator."""
    profiled = [(row.name, row.result["profile"]) for row in rows if (row.result or {}).get("profile")]
    if not profiled:
        return
    groups = [*(group for group, _ in op_profile.GROUPS), op_profile.OTHER]
    print("\nwhere raydd's time goes (torch.profiler self time of one more iteration, % by kind of operator)")
    header = ("row", "profiled s", *groups)
    lines = [
        (name, f"{p['seconds']:.2f}", *(f"{100 * p['shares'].get(group, 0.0):.0f}" for group in groups))
        for name, p in profiled
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, *lines]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(line, widths)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of each measurement (default 2 on CPU)"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="timed iterations per configuration (default 5; --quick 1; workers: at least 2)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed iterations first (default 2; --quick 1; --quick on CPU: none for reference and miniucf)",
    )
    parser.add_argument(
        "--miniucf-iterations",
        type=int,
        default=None,
        help="timed iterations at MiniUCF shape (default 1 on CPU, 3 on CUDA), after at most 1 warm-up",
    )
    parser.add_argument(
        "--mtt-memory-shape",
        default="builtin",
        choices=("builtin", "reference"),
        help="shape of the mtt-memory section",
    )
    parser.add_argument(
        "--reference-tree",
        type=Path,
        default=None,
        help="exported tree of the reference implementation (github:yuz1wan/video_distillation): the reference "
        "section times it in the same run and judges raydd/reference; without it the reference is not run",
    )
    parser.add_argument(
        "--reference-harness",
        type=Path,
        default=Path(__file__).resolve().parents[1].parent / "shared" / "anchor" / "time_official.py",
        help="the shared timing harness time_official.py (default: ../shared/anchor/ beside the repository)",
    )
    parser.add_argument(
        "--reference-pythonpath",
        default=None,
        help="extra import path for the harness's own dependencies (scipy, tqdm), for its processes only",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="reference section: rounds of (raydd, reference) per row (default 3)"
    )
    parser.add_argument(
        "--reference-iterations",
        type=int,
        default=2,
        help="reference section: timed iterations per process and round, after 1 warm-up (default 2)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="reference section: profile one more raydd iteration per row (first round) and show where its time "
        "goes, by kind of operator (benchmarks/op_profile.py)",
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "cpu"),
        help="reference section: compare wall seconds, or CPU seconds of each process (all its threads; for a "
        "machine loaded beyond its cores, where wall time mostly measures the other processes)",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["auto"],
        choices=PRECISIONS,
        help="reference section: raydd's --precision, one row set each (a row whose method computes the same under "
        "an earlier value is not timed again); default auto: DM's real embedding in bf16 where the hardware runs it "
        "fast, MTT in fp32",
    )
    parser.add_argument("--allow-big", action="store_true", help="run plain MTT at MiniUCF shape on CPU too (~30+ GB)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 iteration; on CPU, shrunk reference and MiniUCF settings; nothing judged",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("benchmarks/results/cache"),
        help="where the random datasets, experts and static images are kept",
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/distill.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(RESULT + json.dumps(measure(Job(**json.loads(args.one)))), flush=True)
        return
    args.iterations = args.iterations or (1 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: use {', '.join(SECTIONS)}")
    bench = Bench(args)
    started = time.perf_counter()
    print(
        f"device {bench.device}, torch threads {bench.threads or torch.get_num_threads()}, {args.warmup} warm-up + "
        f"{args.iterations} timed iterations",
        file=sys.stderr,
    )
    for section in SECTIONS:  # a fixed order, whatever order they were named in
        if section in sections:
            getattr(bench, section.replace("-", "_"))()
    memory = (
        "CUDA max allocated, rise above the allocation before the stage is built"
        if bench.cuda
        else "max RSS, rise above the process after imports and paging the dataset in"
    )
    print(
        f"\ndevice {bench.device}; static-dynamic rows time stage 2 (dynamic memories + H); peak: "
        f"{memory}{'; --quick: nothing judged' if args.quick else ''}"
    )
    print_table(bench.rows)
    print_reference(bench)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "one"}
    payload = {
        "settings": settings,
        "device": str(bench.device),
        "torch": torch.__version__,
        "seconds": time.perf_counter() - started,
        "rows": [dataclasses.asdict(r) for r in bench.rows],
        "peaks": bench.peaks,
        "loadavg_end": os.getloadavg(),
    }
    args.output.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.output} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
