"""The plan of ``python -m raydd.distill``: preset, memory per worker and stage, bytes per node, Ray resources.

The run it plans: every node copies the shards its workers touch into its cache once for the whole run
(both stages and restarts) and memory-maps them. Shards mix classes, so a node's workers touch every train
shard (plus the test split for the closing evaluation). With ``--worker-split classes`` each of N workers embeds
only its ~1/N of the classes, a chunk of real clips at a time (a GPU worker keeps its classes' clips on
the GPU as uint8 when they fit); with ``--worker-split samples`` every worker handles every class of its samples.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from raydd.config import resolve_defaults
from raydd.distill.methods.catalog import method_info
from raydd.distill.methods.dm import REAL_CHUNK
from raydd.distill.presets import Preset
from raydd.distill.stages import DYNAMIC, NAIVE, STATIC, StageSpec, dynamic_shape, matching_network
from raydd.planning.memory import WorkerLoad, WorkerMemory, activation_profile, worker_memory
from raydd.planning.sizes import DatasetSize, dataset_size
from raydd.resources import (
    ASSUMED_GPU,
    ASSUMED_GPU_MEMORY,
    Capacity,
    Demand,
    Placement,
    auto_cpus_per_worker,
    auto_use_gpu,
    gpu_size,
    refuse_unless_placed,
    this_machine,
)

if TYPE_CHECKING:
    from raydd.distill.stage_presets import RunPresets


@dataclasses.dataclass(frozen=True)
class DistillPlan:
    preset: Preset
    dataset: DatasetSize
    method: str
    paradigm: str
    workers: int
    split: str
    use_gpu: bool
    cpus_per_worker: float
    classes_per_worker: int
    stage_memory: dict[str, WorkerMemory]  # per stage this run distils
    worker_host_bytes: int  # the largest stage's peak anonymous memory of one worker process
    worker_gpu_bytes: int  # the same on its GPU (0 on CPU workers)
    gpu_memory: str  # the GPU size the plan assumed, and where it comes from ("" on CPU)
    gpu_memory_bytes: int  # that size in bytes
    bytes_per_node: int  # read once per node for the whole run (train shards + test split when evaluating)
    nodes: int | None  # nodes the workers land on (None: no cluster to place them on)
    demands: tuple[Demand, ...]
    capacity: Capacity | None  # the cluster checked against (None: not checked)
    placement: Placement | None


def stage_names(paradigm: str, reuse_static: bool) -> tuple[str, ...]:
    if paradigm == "naive":
        return (NAIVE,)
    return (DYNAMIC,) if reuse_static else (STATIC, DYNAMIC)


def stage_load(
    method: str,
    stage: str,
    preset: Preset,
    ipc: int,
    size: DatasetSize,
    *,
    own_classes: int,
    memory_bounded: bool = False,
) -> WorkerLoad:
    """What one worker of ``stage`` holds when it owns ``own_classes`` of the classes (all of them with
    ``--worker-split samples``)."""
    spec = StageSpec(stage=stage, method=method, dataset_uri="", ipc=ipc, preset=preset)
    t, h, w, c = size.clip_shape
    classes = size.classes
    item = (c, h, w) if stage == STATIC else (c, t, h, w)
    profile = activation_profile(matching_network(spec, classes, size.clip_shape), item)
    frozen, render, hallucinator = 0, 0, 0
    if stage == DYNAMIC:
        spc, dpc = ipc * preset.static_per_ipc, spec.dpc
        per_class = max(spc, dpc)
        dyn = math.prod(dynamic_shape(spec, size.clip_shape))
        hallucinator = (
            (c + preset.dynamic_channels) * c * 27 + c
            if preset.hallucinator == "conv"
            else (c + preset.dynamic_channels) * 8 * 27 + 8 * c * 27 + 8 + c
        )
        learnable, frozen = classes * dpc * dyn + hallucinator, classes * spc * c * h * w
        render = (c + preset.dynamic_channels) * t * h * w + (
            preset.dynamic_channels * t * h * w
            if preset.dynamic_scale > 1 or preset.dynamic_frames not in (None, t)
            else 0
        )
    else:
        per_class = spec.per_class
        learnable = classes * per_class * math.prod(item)
    init_clips = classes * per_class if stage != DYNAMIC and preset.init == "real" else 0
    info = method_info(method)
    if info.unrolls_student:
        # The student unrolls syn_steps steps on batch_syn instances (all of them by default), a worker on its
        # own classes' share of each batch, one graph over all steps unless --memory-bounded; no real data after
        # the initialisation.
        batch = min(preset.batch_syn or classes * per_class, classes * per_class)
        synthetic_items = math.ceil(batch * own_classes / classes) * (1 if memory_bounded else preset.syn_steps)
        real_chunk = 0
    elif info.real_per_class:
        synthetic_items = own_classes * per_class
        real_chunk = min(REAL_CHUNK, own_classes * preset.batch_real)
    else:  # batch_real clips over all classes (FRePo), a worker's share of them
        synthetic_items = own_classes * per_class
        real_chunk = min(REAL_CHUNK, math.ceil(preset.batch_real * own_classes / classes))
    own_clips = math.ceil(size.train_clips * own_classes / classes)
    return WorkerLoad(
        profile=profile,
        learnable_values=learnable,
        frozen_values=frozen,
        synthetic_items=synthetic_items,
        render_values=render,
        real_chunk_clips=real_chunk,
        real_clip_bytes=size.clip_bytes,
        index_clips=size.train_clips,
        resident_bytes=own_clips * size.clip_bytes if info.reads_real else 0,  # MTT reads no real clips per iteration
        init_clips=init_clips,
        student_values=2 * profile.params * (preset.syn_steps + 1) if info.unrolls_student else 0,
        input_is_view=stage != DYNAMIC and not info.unrolls_student,  # a class's free tensors are a slice of the set
        shared_values=hallucinator if stage == DYNAMIC else 0,
    )


def distill_demands(config: Any, known: Capacity) -> tuple[bool, float, list[Demand]]:
    """(use_gpu, CPUs per worker, what the run asks Ray for) with the automatic defaults resolved on ``known``."""
    use_gpu = auto_use_gpu(config.use_gpu, known)
    cpus = auto_cpus_per_worker(config.cpus_per_worker, config.workers, use_gpu, known)
    demands = [Demand("Ray Train workers", config.workers, cpus, 1.0 if use_gpu else 0.0, gang=True)]
    if config.eval_runs:
        demands.append(
            Demand("evaluation runs", config.eval_runs, cpus if use_gpu else 1.0, 1.0 if use_gpu else 0.0, gang=False)
        )
    return use_gpu, cpus, demands


def _stage_method(config: Any, stage: str, presets: RunPresets) -> tuple[str, str, Preset]:
    """(method, stage, preset) of one stage: stage 1 runs ``--static-method`` with its own preset."""
    if stage == STATIC:
        return presets.stage1_method, stage, presets.stage1
    return config.method, stage, presets.run


def plan_distill(config: Any, presets: RunPresets, capacity: Capacity | None = None) -> DistillPlan:
    """The plan of ``config`` (a :class:`~raydd.distill.settings.DistillConfig`) with its resolved ``presets``,
    checked against ``capacity`` when given (raises a one-line :class:`~raydd.errors.RayddError` when the cluster
    cannot place it)."""
    config = resolve_defaults(config)  # a config built in code may leave the store to $RAYDD_STORE
    preset = presets.run
    size = dataset_size(config.store, config.dataset)
    known = capacity or this_machine()
    use_gpu, cpus, demands = distill_demands(config, known)
    split = getattr(config, "worker_split", "classes")
    own = math.ceil(size.classes / config.workers) if split == "classes" else size.classes
    gpu_bytes = known.gpu_memory_bytes()
    gpu_memory = "" if not use_gpu else (gpu_size(gpu_bytes) if gpu_bytes else ASSUMED_GPU)
    stages = {
        stage: worker_memory(
            stage_load(
                *_stage_method(config, stage, presets),
                config.ipc,
                size,
                own_classes=own,
                memory_bounded=config.memory_bounded,
            ),
            gpu=use_gpu,
            gpu_memory_bytes=gpu_bytes or ASSUMED_GPU_MEMORY,
        )
        for stage in stage_names(config.paradigm, bool(config.static))
    }
    placement = refuse_unless_placed(demands, capacity)
    return DistillPlan(
        preset=preset,
        dataset=size,
        method=config.method,
        paradigm=config.paradigm,
        workers=config.workers,
        split=split,
        use_gpu=use_gpu,
        cpus_per_worker=cpus,
        classes_per_worker=own,
        stage_memory=stages,
        worker_host_bytes=max(m.host_bytes for m in stages.values()),
        worker_gpu_bytes=max(m.gpu_bytes for m in stages.values()),
        gpu_memory=gpu_memory,
        gpu_memory_bytes=gpu_bytes or ASSUMED_GPU_MEMORY,
        bytes_per_node=size.train_bytes + (size.test_bytes if config.eval_runs else 0),
        nodes=placement.nodes_used if placement else None,
        demands=tuple(demands),
        capacity=capacity,
        placement=placement,
    )
