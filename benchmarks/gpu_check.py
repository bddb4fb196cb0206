"""The one prepared GPU check (issue 26, item 7): every GPU path of distillation, run once where a GPU is lent.

    python benchmarks/gpu_check.py                  # one CUDA GPU: under 8 min on one H100; benchmarks/results/gpu.json
    python benchmarks/gpu_check.py --multi-gpu      # also the NCCL checks with two ranks (needs 2 GPUs)
    python benchmarks/gpu_check.py --dry-run        # CPU, tiny shapes, 1 iteration a run: every check's code (CI)

Without a CUDA GPU and without ``--dry-run`` it refuses in one line. Inputs are random but seeded: uint8 clips at
each shape written as ``STORE/datasets/NAME`` (benchmarks/scale.py's writer, so ``--plan`` reads their manifests),
expert trajectories and stage-1 images as benchmarks/distill.py writes them. Static-dynamic runs time stage 2.

run          DM, DC, MTT and FRePo, naive and static-dynamic, fp32 and bf16, with the real clips resident on the
             device (uint8, gathered there) and streamed (the prefetching, pinned loader), at builtin's shape (10
             classes, 8x32x32, builtin presets) and MiniUCF's (50 classes, 16x112x112, the Suppl. presets; DC has no
             MiniUCF row: DM's network width and batch_real with DC's builtin lrs). MTT reads no real clips per
             iteration, so it has no streamed row. 1 warm-up + 2 timed iterations. Pass: finite losses, the tensors
             on the GPU, residency as asked, and a streamed run's losses equal to its resident twin's (same clips).
gpu-vs-cpu   Every builtin fp32 run again on the CPU: the same loss curve to ``--rtol`` (default 1e-3). Both compute
             IEEE float32 (raydd.devices.configure_cuda turns TF32 off); they differ only in summation order
             (cuDNN's algorithms, atomic adds in index-gather and max-pool backward), ~1e-6 relative a reduction,
             which three optimiser steps amplify by far less than 1e-3; a wrong device path (a CPU tensor mixed in,
             a dropped synchronisation, bf16 where fp32 was asked) moves the loss by percents.
plan         Peak GPU memory (torch.cuda.max_memory_allocated) of each fp32 run whose residency is the one the plan
             predicts, against ``python -m raydd.distill --plan``'s GPU bytes for the same settings (its CUDA context
             left out: the allocator does not see it). Target within 25 %.
flops        DM at MiniUCF shape in bf16: GFLOP/s (FLOPs of one iteration by FlopCounterMode) against this GPU's
             measured bf16 peak (benchmarks/peak_flops.py's 8192-side matmul and MiniC3D conv3d kernels on the GPU).
             Target >= 35 %.
busy         DM naive at K400 shape (400 classes, 8x64x64, the K400 preset: 25,600 real clips an iteration), at
             ``--precision auto``, resident and streamed: the share of one iteration's wall time in which a kernel
             runs (torch.profiler's CUDA kernel intervals, merged). Target >= 80 % streamed.
mtt-memory   MTT naive and static-dynamic at MiniUCF shape (syn_steps 10, batch_syn 50), memory-bounded against
             plain: the same losses (``--rtol``), a lower peak, and at most 24 GB.
multi-gpu    ``--multi-gpu``, where torch sees at least 2 GPUs: DM and MTT naive at builtin shape on two NCCL ranks
             (``--worker-split classes``: the class split's differentiable all-reduce and gather) against the
             single-GPU run's losses (``--rtol``). Otherwise "not run".

``--dry-run`` runs every check's code on the CPU at tiny shapes (3-4 classes of 4x16x16, network width 4): a check
that raises or whose CPU-checkable claim fails says "fail"; the others say "dry-run", GPU-only numbers (memory,
busy share, GFLOP/s) are left out rather than faked. ``--multi-gpu`` in a dry run uses two gloo ranks.

Prints a table and writes ``--output`` (default benchmarks/results/gpu.json; a dry run gpu-dry-run.json). Exit
status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import peak_flops  # noqa: E402
from benchmarks.distill import (  # noqa: E402
    BUILTIN,
    GB,
    MAX_START_EPOCH,
    MINIUCF,
    MINIUCF_LIMIT_GB,
    Shape,
    write_experts,
    write_random_static,
)
from benchmarks.scale import RESULTS, write_random_like, write_results  # noqa: E402
from raydd.devices import pick_device  # noqa: E402
from raydd.distill.loop import Distiller, SingleProcess, TorchDistributed  # noqa: E402
from raydd.distill.methods.catalog import method_info  # noqa: E402
from raydd.distill.presets import Preset, table_preset  # noqa: E402
from raydd.distill.settings import DistillConfig  # noqa: E402
from raydd.distill.stage_presets import resolve_presets  # noqa: E402
from raydd.distill.stages import DYNAMIC, NAIVE, StageSpec, build_stage  # noqa: E402
from raydd.errors import RayddError  # noqa: E402
from raydd.planning.distill import plan_distill  # noqa: E402
from raydd.planning.memory import CUDA_CONTEXT_BYTES  # noqa: E402
from raydd.ports import free_port  # noqa: E402
from raydd.storage import resolve  # noqa: E402

METHODS, PARADIGMS, PRECISIONS = ("dm", "dc", "mtt", "frepo"), ("naive", "static-dynamic"), ("fp32", "bf16")
PLAN_TARGET, FLOPS_TARGET, BUSY_TARGET = 0.25, 0.35, 0.80
DRY = "dry-run"


@dataclasses.dataclass(frozen=True)
class Mode:
    """Shapes and sizes of a run: the real ones on a GPU, tiny ones in the dry run."""

    builtin: Shape
    miniucf: Shape
    k400: Shape
    warmup: int
    iterations: int
    overrides: dict[str, Any]  # preset fields every run takes


GPU_MODE = Mode(BUILTIN, MINIUCF, Shape("k400", 400, 8, 64, 16), 1, 2, {})
DRY_MODE = Mode(
    Shape("builtin", 3, 4, 16, 3),
    Shape("miniucf", 3, 4, 16, 3),
    Shape("k400", 4, 4, 16, 3),
    0,
    1,
    {"network_width": 4, "batch_real": 2, "syn_steps": 2, "batch_syn": 3},
)
# peak_flops' kernel sizes: on a GPU a 2048-side matmul is launch-bound (~30 us on an H100), so 8192; tiny on a CPU.
GPU_PEAK: dict[str, Any] = {"matmul_side": 8192}
TINY_PEAK: dict[str, Any] = {"matmul_side": 64, "convs": {"conv3d_layer1": ((2, 3, 4, 16, 16), (4, 3, 3, 7, 7))}}


@dataclasses.dataclass
class Check:
    """One row of the table and of the JSON: what was checked, its numbers, its target and its verdict."""

    name: str
    status: str = ""
    value: str = ""
    target: str = ""
    measured: dict[str, Any] = dataclasses.field(default_factory=dict)


class GpuCheck:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.dry = args, args.dry_run
        self.mode = DRY_MODE if self.dry else GPU_MODE
        self.device = pick_device("cpu" if self.dry else "cuda")
        self.store = args.store
        self.cache = resolve(str(Path(args.store) / "inputs"))
        self.checks: list[Check] = []
        self.runs: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}  # (shape, method, paradigm, prec, res)
        self.peak: dict[str, Any] = {}

    # ---- helpers ----------------------------------------------------------------------------------------------

    def verdict(self, ok: bool, *, gpu_only: bool = False) -> str:
        """A dry run never passes: it says "dry-run" where the CPU could not refute the claim."""
        if not ok and not (self.dry and gpu_only):
            return "FAIL"
        return DRY if self.dry else "PASS"

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        print(f"  {check.name}: {check.status} {check.value}", file=sys.stderr, flush=True)
        return check

    def preset(self, method: str, paradigm: str, shape: Shape, **fields: Any) -> Preset:
        row = table_preset(method, paradigm, shape.name, 1)
        if row is None:  # DC has no Suppl. row for MiniUCF: its builtin lrs at DM's sizes there (cost, not accuracy)
            sizes = table_preset("dm", paradigm, shape.name, 1)
            lrs = table_preset(method, paradigm, "builtin", 1)
            assert sizes is not None and lrs is not None, (method, paradigm, shape.name)
            row = dataclasses.replace(lrs, network_width=sizes.network_width, batch_real=sizes.batch_real)
        if method == "mtt":
            fields = {"max_start_epoch": MAX_START_EPOCH, **fields}
        return dataclasses.replace(row, **{**fields, **self.mode.overrides})

    def spec(
        self, shape: Shape, method: str, paradigm: str, preset: Preset, *, memory_bounded: bool = False
    ) -> StageSpec:
        dataset = write_random_like(self.store, shape.name, shape.classes, shape.clip_shape, shape.clips_per_class)
        experts = None
        if method == "mtt":
            epochs = preset.max_start_epoch + preset.expert_epochs
            experts = write_experts(self.cache, shape, preset.network_width, epochs)
        static = write_random_static(self.cache, shape, preset.static_per_ipc) if paradigm != "naive" else None
        return StageSpec(
            stage=NAIVE if paradigm == "naive" else DYNAMIC,
            method=method,
            dataset_uri=dataset,
            ipc=1,
            preset=preset,
            static_uri=static,
            experts_uri=experts,
            memory_bounded=memory_bounded,
            device=self.device.type,
        )

    def execute(
        self,
        spec: StageSpec,
        device: torch.device,
        resident: bool | None,
        *,
        count_flops: bool = False,
        profile_busy: bool = False,
    ) -> dict[str, Any]:
        """Build the stage (as a worker does) and time its iterations; peak GPU memory of the whole build + run."""
        cuda = device.type == "cuda"
        if cuda:  # the last run's tensors gone (a stage holds reference cycles), so that the peak is this run's
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        distiller = build_stage(spec, SingleProcess(), device, resident=resident)
        losses, seconds = [], []
        total = self.mode.warmup + self.mode.iterations
        for iteration in range(total):
            started = time.perf_counter()
            losses.append(distiller.step(iteration).loss)
            synchronise(device)
            if iteration >= self.mode.warmup:
                seconds.append(time.perf_counter() - started)
        result: dict[str, Any] = {
            "losses": losses,
            "seconds": seconds,
            "median_s": statistics.median(seconds),
            "resident_clips": distiller.real.resident_clips,
            "tensors_on": sorted({str(p.device) for p in distiller.learnables}),
            "peak_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
        }
        if count_flops:
            with FlopCounterMode(display=False) as counter:
                distiller.step(total)
            result["flops"] = counter.get_total_flops()
        if profile_busy:
            result.update(busy_share(distiller, total + 1, device))
        return result

    # ---- checks -----------------------------------------------------------------------------------------------

    def measure_peak(self) -> None:
        sizes = TINY_PEAK if self.dry else GPU_PEAK
        try:
            self.peak = peak_flops.measure(None, 1 if self.dry else 3, self.device, **sizes)
        except Exception as error:  # noqa: BLE001 - one failed check, not a failed script
            self.add(Check("peak GFLOP/s (matmul, conv3d)", "FAIL", measured={"error": repr(error)[:300]}))
            return
        value = DRY if self.dry else f"{self.peak['gflops']['bf16']['peak']:.0f}"  # tiny kernels on a CPU: no peak
        self.add(Check("peak bf16 GFLOP/s (matmul, conv3d)", DRY if self.dry else "measured", value, "", self.peak))

    def run_matrix(self) -> None:
        for shape in (self.mode.builtin, self.mode.miniucf):
            for method in METHODS:
                for paradigm in PARADIGMS:
                    for precision in PRECISIONS:
                        twins = {}
                        for resident in (True, False) if method_info(method).reads_real else (None,):
                            twins[resident] = self.one_run(shape, method, paradigm, precision, resident)
                        if True in twins and False in twins and twins[True] and twins[False]:
                            self.compare_twins(shape, method, paradigm, precision, twins[True], twins[False])

    def one_run(
        self, shape: Shape, method: str, paradigm: str, precision: str, resident: bool | None
    ) -> dict[str, Any] | None:
        residency = {True: "resident", False: "streamed", None: "no real clips"}[resident]
        name = f"run {shape.name} {method} {paradigm} {precision} {residency}"
        count = shape is self.mode.miniucf and method == "dm" and precision == "bf16"
        try:
            result = self.execute(
                self.spec(shape, method, paradigm, self.preset(method, paradigm, shape, precision=precision)),
                self.device,
                resident,
                count_flops=count,
            )
        except RayddError as error:
            if not str(error).startswith("non-finite"):
                raise
            # The numerics of bf16 on a CPU (oneDNN) are not a GPU's: the dry run does not judge them.
            self.add(
                Check(
                    name,
                    self.verdict(False, gpu_only=precision == "bf16"),
                    "non-finite loss",
                    "",
                    {"error": str(error)},
                )
            )
            return None
        except Exception as error:  # noqa: BLE001 - one failed run, not a failed check script
            self.add(Check(name, "FAIL", "raised", measured={"error": repr(error)[:300]}))
            return None
        self.runs[(shape.name, method, paradigm, precision, residency)] = result
        finite = all(math.isfinite(loss) for loss in result["losses"])
        placed = result["tensors_on"] == [str(self.device) if self.device.type == "cpu" else f"{self.device}:0"]
        as_asked = resident is None or (result["resident_clips"] > 0) == resident
        peak = result["peak_bytes"]
        value = f"{result['median_s']:.3f} s/it" + (f", {gigabytes(peak)}" if peak is not None else "")
        verdict = self.verdict(finite and placed and as_asked)
        self.add(Check(name, verdict, value, "finite, on device", {**result, "finite": finite, "placed": placed}))
        return result

    def compare_twins(
        self, shape: Shape, method: str, paradigm: str, precision: str, resident: dict, streamed: dict
    ) -> None:
        gap = relative_gap(resident["losses"], streamed["losses"])
        self.add(
            Check(
                f"resident = streamed {shape.name} {method} {paradigm} {precision}",
                self.verdict(gap <= self.args.rtol),
                f"{gap:.1e} rel",
                f"<= {self.args.rtol:g}",
                {"max_relative_gap": gap},
            )
        )

    def gpu_against_cpu(self) -> None:
        shape, cpu = self.mode.builtin, torch.device("cpu")
        for method in METHODS:
            for paradigm in PARADIGMS:
                residency = "resident" if method_info(method).reads_real else "no real clips"
                gpu = self.runs.get((shape.name, method, paradigm, "fp32", residency))
                name = f"gpu vs cpu {shape.name} {method} {paradigm} fp32"
                if gpu is None:
                    self.add(Check(name, "FAIL", "no GPU run to compare"))
                    continue
                spec = self.spec(shape, method, paradigm, self.preset(method, paradigm, shape, precision="fp32"))
                try:
                    on_cpu = self.execute(dataclasses.replace(spec, device="cpu"), cpu, None)
                except Exception as error:  # noqa: BLE001
                    self.add(Check(name, "FAIL", "raised", measured={"error": repr(error)[:300]}))
                    continue
                gap = relative_gap(gpu["losses"], on_cpu["losses"])
                measured = {"gpu_losses": gpu["losses"], "cpu_losses": on_cpu["losses"], "max_relative_gap": gap}
                self.add(
                    Check(
                        name, self.verdict(gap <= self.args.rtol), f"{gap:.1e} rel", f"<= {self.args.rtol:g}", measured
                    )
                )

    def plan_memory(self) -> None:
        for shape in (self.mode.builtin, self.mode.miniucf):
            for method in METHODS:
                for paradigm in PARADIGMS:
                    self.plan_one(shape, method, paradigm)

    def plan_one(self, shape: Shape, method: str, paradigm: str) -> None:
        name = f"plan {shape.name} {method} {paradigm} fp32"
        preset = self.preset(method, paradigm, shape, precision="fp32")
        spec = self.spec(shape, method, paradigm, preset)
        try:
            memory = planned_memory(self.store, shape, method, paradigm, preset, spec.static_uri)
        except Exception as error:  # noqa: BLE001
            self.add(Check(name, "FAIL", "raised", measured={"error": repr(error)[:300]}))
            return
        residency = (
            ("resident" if memory.resident else "streamed") if method_info(method).reads_real else "no real clips"
        )
        run = self.runs.get((shape.name, method, paradigm, "fp32", residency))
        predicted = memory.gpu_bytes - CUDA_CONTEXT_BYTES
        measured: dict[str, Any] = {
            "predicted_bytes": predicted,
            "plan_resident": memory.resident,
            "parts": memory.parts,
        }
        if run is None or run["peak_bytes"] is None:
            status = DRY if self.dry and run is not None else "FAIL"
            self.add(Check(name, status, f"plan {gigabytes(predicted)}", f"within {PLAN_TARGET:.0%}", measured))
            return
        error = abs(predicted - run["peak_bytes"]) / run["peak_bytes"]
        measured.update(peak_bytes=run["peak_bytes"], error=error)
        value = f"{gigabytes(predicted)} / {gigabytes(run['peak_bytes'])}"
        self.add(Check(name, self.verdict(error <= PLAN_TARGET), value, f"within {PLAN_TARGET:.0%}", measured))

    def flops(self) -> None:
        peak = ((self.peak.get("gflops") or {}).get("bf16") or {}).get("peak")  # 0.0 on a CPU without bf16
        for paradigm in PARADIGMS:
            for residency in ("resident", "streamed"):
                name = f"GFLOP/s {self.mode.miniucf.name} dm {paradigm} bf16 {residency}"
                run = self.runs.get((self.mode.miniucf.name, "dm", paradigm, "bf16", residency))
                if run is None or not run.get("flops") or peak is None:
                    self.add(Check(name, "FAIL", "no run, FLOPs or peak"))
                    continue
                rate = run["flops"] / run["median_s"] / 1e9
                share = rate / peak if peak else 0.0
                measured = {"flops": run["flops"], "median_s": run["median_s"], "gflops_per_s": rate, "of_peak": share}
                status = self.verdict(share >= FLOPS_TARGET, gpu_only=True)
                value = DRY if self.dry else f"{rate:.0f} ({share:.0%})"
                self.add(Check(name, status, value, f">= {FLOPS_TARGET:.0%} peak", measured))

    def busy(self) -> None:
        shape = self.mode.k400
        for resident in (True, False):
            residency = "resident" if resident else "streamed"
            name = f"GPU busy {shape.name} dm naive auto {residency}"
            target = f">= {BUSY_TARGET:.0%}" if not resident else ""
            try:
                spec = self.spec(shape, "dm", "naive", self.preset("dm", "naive", shape, precision="auto"))
                run = self.execute(spec, self.device, resident, profile_busy=True)
            except Exception as error:  # noqa: BLE001
                self.add(Check(name, "FAIL", "raised", target, {"error": repr(error)[:300]}))
                continue
            share = run["busy_share"]
            if share is None:  # no CUDA kernels: the CPU
                self.add(Check(name, self.verdict(True, gpu_only=True), DRY, target, run))
                continue
            ok = resident or share >= BUSY_TARGET
            self.add(Check(name, self.verdict(ok, gpu_only=True), f"{share:.0%}", target, run))

    def mtt_memory(self) -> None:
        shape = self.mode.miniucf
        for paradigm in PARADIGMS:
            name = f"memory-bounded mtt {shape.name} {paradigm} fp32"
            preset = self.preset("mtt", paradigm, shape, precision="fp32")
            plain = self.runs.get((shape.name, "mtt", paradigm, "fp32", "no real clips"))
            try:
                bounded = self.execute(
                    self.spec(shape, "mtt", paradigm, preset, memory_bounded=True), self.device, None
                )
            except Exception as error:  # noqa: BLE001
                self.add(Check(name, "FAIL", "raised", measured={"error": repr(error)[:300]}))
                continue
            if plain is None:
                self.add(Check(name, "FAIL", "no plain run", measured=bounded))
                continue
            gap = relative_gap(plain["losses"], bounded["losses"])
            measured = {"bounded": bounded, "plain_peak_bytes": plain["peak_bytes"], "max_relative_gap": gap}
            target = f"same loss, <= {MINIUCF_LIMIT_GB:.0f} GB"
            if bounded["peak_bytes"] is None:
                self.add(Check(name, self.verdict(gap <= self.args.rtol), f"{gap:.1e} rel", target, measured))
                continue
            lower = bounded["peak_bytes"] < plain["peak_bytes"] and bounded["peak_bytes"] <= MINIUCF_LIMIT_GB * GB
            value = f"{gigabytes(bounded['peak_bytes'])} / {gigabytes(plain['peak_bytes'])}"
            self.add(Check(name, self.verdict(gap <= self.args.rtol and lower), value, target, measured))

    def multi_gpu(self) -> None:
        shape, methods = self.mode.builtin, ("dm", "mtt")
        names = [f"two ranks {shape.name} {method} naive fp32" for method in methods]
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not self.args.multi_gpu or (not self.dry and gpus < 2):
            reason = "not run: --multi-gpu not given" if not self.args.multi_gpu else f"not run: {gpus} GPU"
            for name in names:
                self.add(Check(name, reason))
            return
        specs = [self.spec(shape, m, "naive", self.preset(m, "naive", shape, precision="fp32")) for m in methods]
        try:
            ranks = two_ranks(specs, self.mode.warmup + self.mode.iterations, "gloo" if self.dry else "nccl")
        except Exception as error:  # noqa: BLE001
            for name in names:
                self.add(Check(name, "FAIL", "raised", measured={"error": repr(error)[:300]}))
            return
        for number, (name, method) in enumerate(zip(names, methods)):
            residency = "resident" if method_info(method).reads_real else "no real clips"
            single = self.runs.get((shape.name, method, "naive", "fp32", residency))
            curves = [rank[number] for rank in ranks]
            if single is None:
                self.add(Check(name, "FAIL", "no single-process run", measured={"ranks": curves}))
                continue
            gap = max(relative_gap(single["losses"], curve) for curve in curves)
            measured = {"single": single["losses"], "ranks": curves, "max_relative_gap": gap}
            status = self.verdict(gap <= self.args.rtol)
            self.add(Check(name, status, f"{gap:.1e} rel", f"<= {self.args.rtol:g}", measured))


# ---- measurements ------------------------------------------------------------------------------------------------


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gigabytes(nbytes: int) -> str:
    return f"{nbytes / GB:.2f} GB" if abs(nbytes) >= 0.1 * GB else f"{nbytes / 1e6:.1f} MB"


def relative_gap(a: list[float], b: list[float]) -> float:
    """The largest relative difference of two loss curves (infinite when their lengths differ)."""
    if len(a) != len(b):
        return math.inf
    return max((abs(x - y) / max(abs(x), abs(y), 1e-12) for x, y in zip(a, b)), default=0.0)


def busy_share(distiller: Distiller, iteration: int, device: torch.device) -> dict[str, Any]:
    """One iteration under torch.profiler: the union of its CUDA kernel intervals over its wall time (None on the
    CPU, where there are no device events). Copies, memsets and user annotations (ranges that span other work) are
    not compute and do not count: kernels are kineto's "kernel" activities, or, where a torch names no activity
    types, the device events not named Memcpy/Memset."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronise(device)
    with profile(activities=activities) as profiled:
        started = time.perf_counter()
        distiller.step(iteration)
        synchronise(device)
        wall = time.perf_counter() - started
    on_device = [e for e in profiled.events() if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    kinds = sorted({str(getattr(e, "activity_type", None)) for e in on_device})
    kernels = [e for e in on_device if getattr(e, "activity_type", None) == "kernel"]
    chosen = "activity_type" if kernels else "names"
    if not kernels:
        kernels = [e for e in on_device if not e.name.startswith(("Memcpy", "Memset"))]
    busy_us, end = 0.0, -math.inf
    for start, stop in sorted((e.time_range.start, e.time_range.end) for e in kernels):
        if stop > end:
            busy_us += stop - max(start, end)
            end = stop
    share = busy_us / 1e6 / wall if kernels else None
    return {
        "busy_share": share,
        "profiled_wall_s": wall,
        "kernels": len(kernels),
        "device_activity_types": kinds,
        "kernels_by": chosen,
    }


def planned_memory(store: str, shape: Shape, method: str, paradigm: str, preset: Preset, static_uri: str | None) -> Any:
    """What ``python -m raydd.distill --plan`` predicts for one GPU worker with these settings (the stage timed)."""
    fields = preset.to_dict()
    config = DistillConfig(
        dataset=shape.name,
        method=method,
        paradigm=paradigm,
        ipc=1,
        store=store,
        workers=1,
        use_gpu=True,
        cpus_per_worker=1,
        static=static_uri,
        eval_runs=0,
        **fields,
    )
    plan = plan_distill(config, resolve_presets(config))
    return plan.stage_memory[NAIVE if paradigm == "naive" else DYNAMIC]


def _rank(rank: int, specs: list[StageSpec], iterations: int, backend: str, port: int, out: str) -> None:
    import torch.distributed as dist

    device = torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        curves = []
        for spec in specs:
            distiller = build_stage(spec, TorchDistributed(), device)
            curves.append([distiller.step(iteration).loss for iteration in range(iterations)])
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(curves))


def two_ranks(specs: list[StageSpec], iterations: int, backend: str) -> list[list[list[float]]]:
    """Each stage on two torch.distributed ranks in processes of their own (one GPU each on NCCL): per rank, the
    loss curve of each stage."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_rank, args=(specs, iterations, backend, free_port(), out), nprocs=2, join=True)
        return [json.loads(Path(out, f"rank{rank}.json").read_text()) for rank in range(2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every check's code on the CPU at tiny shapes")
    parser.add_argument("--multi-gpu", action="store_true", help="also the two-rank NCCL checks (needs 2 GPUs)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of compared loss curves")
    parser.add_argument("--store", default=None, help="where the inputs are written (default: a fresh temp folder)")
    parser.add_argument("--output", type=Path, default=None, help="the JSON (default benchmarks/results/gpu.json)")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit(
            f"gpu_check: no CUDA GPU visible to torch {torch.__version__}: run it on a GPU machine, or pass --dry-run "
            "to run every check's code on the CPU"
        )
    if args.output is None:
        args.output = RESULTS / ("gpu-dry-run.json" if args.dry_run else "gpu.json")
    started, seconds = time.perf_counter(), {}
    with tempfile.TemporaryDirectory(prefix="raydd-gpu-check-") as scratch:
        args.store = args.store or scratch
        check = GpuCheck(args)
        if check.dry:
            torch.set_num_threads(1)  # tiny tensors: more threads only contend on a shared machine
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        print(f"gpu_check on {gpu or 'the CPU (dry run)'}, torch {torch.__version__}", file=sys.stderr)
        for step in (
            check.measure_peak,
            check.run_matrix,
            check.gpu_against_cpu,
            check.plan_memory,
            check.flops,
            check.busy,
            check.mtt_memory,
            check.multi_gpu,
        ):
            began = time.perf_counter()
            step()
            seconds[step.__name__] = round(time.perf_counter() - began, 1)
            print(f"{step.__name__}: {seconds[step.__name__]} s", file=sys.stderr, flush=True)
    results = {
        "machine": platform.node(),
        "gpu": gpu,
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "dry_run": args.dry_run,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "checks": [dataclasses.asdict(c) for c in check.checks],
        "seconds_per_check": seconds,
        "wall_s": time.perf_counter() - started,
    }
    rows = [(c.name, c.value, c.target, c.status) for c in check.checks]
    write_results(args.output.stem, results, rows, widths=(52, 24, 22), path=args.output)
    failed = [c.name for c in check.checks if c.status == "FAIL"]
    if failed:
        sys.exit(f"gpu_check: {len(failed)} check(s) failed, the first: {failed[0]}")


if __name__ == "__main__":
    main()
