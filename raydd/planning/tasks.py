"""The plans of ``python -m raydd.experts`` and ``python -m raydd.tune``: Ray tasks (and Tune trials) that
each read the node's cached shards, memory-mapped, and hold one model and one batch at a time."""

from __future__ import annotations

import dataclasses
from typing import Any

from raydd.distill.stages import DYNAMIC, STATIC
from raydd.planning.distill import stage_load
from raydd.planning.memory import (
    ALLOCATOR_SLACK,
    CUDA_CONTEXT_BYTES,
    CUDA_HOST_BYTES,
    FLOAT,
    GPU_ALLOCATOR_SLACK,
    PROCESS_BYTES,
    WorkerMemory,
    activation_profile,
    worker_memory,
)
from raydd.planning.sizes import DatasetSize, dataset_size
from raydd.resources import (
    ASSUMED_GPU,
    ASSUMED_GPU_MEMORY,
    AUTO_GPUS_PER_EXPERT,
    AUTO_GPUS_PER_TRIAL,
    Capacity,
    Demand,
    Placement,
    auto_gpus,
    gpu_size,
    refuse_unless_placed,
    tasks_at_once,
    this_machine,
)

SWEPT = ("lr_dynamic", "lr_hal")


@dataclasses.dataclass(frozen=True)
class TaskPlan:
    command: str
    summary: str
    settings: dict[str, Any]  # the resolved values --plan reports (preset, GPU shares, counts)
    dataset: DatasetSize
    memory: dict[str, WorkerMemory]  # per kind of task
    use_gpu: bool
    gpu_memory: str
    gpu_share_bytes: int | None  # GPU memory of one task's share of a GPU (None on CPU)
    bytes_per_node: int
    demands: tuple[Demand, ...]
    capacity: Capacity | None
    placement: Placement | None

    @property
    def task_host_bytes(self) -> int:
        return max(m.host_bytes for m in self.memory.values())


def expert_memory(
    model: Any,
    size: DatasetSize,
    batch_size: int,
    epochs: int,
    dtype_bytes: int,
    momentum: bool,
    *,
    gpu: bool,
    gpu_memory_bytes: int,
) -> WorkerMemory:
    """One expert task: model + gradient (+ momentum), the trajectory's snapshots until its shard is written,
    one training batch (uint8, three float copies while standardising, the graph and its backward)."""
    t, h, w, c = size.clip_shape
    item = (c, h, w) if model.name == "convnet" else (c, t, h, w)
    profile = activation_profile(model.build, item, forward="forward")
    params = FLOAT * profile.params * (3 if momentum else 2)
    snapshots = profile.params * dtype_bytes * (epochs + 1)
    batch = batch_size * (
        size.clip_bytes + 3 * FLOAT * size.clip_values + profile.saved_bytes + 2 * profile.largest_bytes
    )
    index = 16 * (size.train_clips + size.test_clips)
    parts = {
        "model + grad": params,
        "trajectory snapshots": snapshots,
        "one batch (uint8 + float + graph)": batch,
        "label index": index,
    }
    if not gpu:
        return WorkerMemory(
            PROCESS_BYTES + index + int(ALLOCATOR_SLACK * (params + snapshots + batch)), 0, False, parts
        )
    device = CUDA_CONTEXT_BYTES + int(GPU_ALLOCATOR_SLACK * (params + batch))
    host = PROCESS_BYTES + CUDA_HOST_BYTES + index + int(ALLOCATOR_SLACK * (snapshots + batch_size * size.clip_bytes))
    return WorkerMemory(host, device, False, {**parts, "CUDA context": CUDA_CONTEXT_BYTES})


def _gpu(capacity: Capacity) -> tuple[int, str]:
    size = capacity.gpu_memory_bytes()
    return (size, gpu_size(size)) if size else (ASSUMED_GPU_MEMORY, ASSUMED_GPU)


def experts_demands(config: Any, known: Capacity) -> tuple[float, list[Demand]]:
    gpus = auto_gpus(config.gpus_per_expert, AUTO_GPUS_PER_EXPERT, known)
    at_once = config.workers or tasks_at_once(config.cpus_per_expert, gpus, known)
    return gpus, [Demand("expert tasks", min(config.wanted(), at_once), config.cpus_per_expert, gpus, gang=False)]


def tune_demands(config: Any, known: Capacity) -> tuple[float, list[Demand]]:
    gpus = auto_gpus(config.gpus_per_trial, AUTO_GPUS_PER_TRIAL, known)
    return gpus, [
        Demand("stage-1 task", 1, config.cpus_per_trial, gpus, gang=False),
        Demand("Tune trials", config.max_concurrent, config.cpus_per_trial, gpus, gang=False),
    ]


def plan_experts(config: Any, capacity: Capacity | None = None) -> TaskPlan:
    """The plan of an :class:`~raydd.experts.job.ExpertsConfig`."""
    from raydd.experts.trainer import model_options
    from raydd.experts.trajectories import ModelSpec

    size = dataset_size(config.store, config.dataset)
    known = capacity or this_machine()
    gpus, demands = experts_demands(config, known)
    gpu_bytes, gpu_memory = _gpu(known)
    model = ModelSpec.of(
        config.model,
        num_classes=size.classes,
        clip_shape=list(size.clip_shape),
        options=model_options(config.model, config.width),
    )
    memory = expert_memory(
        model,
        size,
        config.batch_size,
        config.epochs,
        2 if config.dtype == "bfloat16" else 4,
        config.momentum > 0,
        gpu=gpus > 0,
        gpu_memory_bytes=gpu_bytes,
    )
    wanted = config.wanted()
    return TaskPlan(
        command="raydd.experts",
        summary=f"{wanted} {config.model} expert(s) of {config.epochs} epochs, up to {demands[0].count} at once",
        settings={
            "gpus_per_expert": gpus,
            "cpus_per_expert": config.cpus_per_expert,
            "batch_size": config.batch_size,
            "dtype": config.dtype,
        },
        dataset=size,
        memory={"expert": memory},
        use_gpu=gpus > 0,
        gpu_share_bytes=int(gpus * gpu_bytes) if gpus else None,
        gpu_memory=gpu_memory if gpus > 0 else "",
        bytes_per_node=size.train_bytes + size.test_bytes,
        demands=tuple(demands),
        capacity=capacity,
        placement=refuse_unless_placed(demands, capacity),
    )


def plan_tune(config: Any, preset: Any, capacity: Capacity | None = None) -> TaskPlan:
    """The plan of a :class:`~raydd.tune.TuneConfig` whose distillation preset is ``preset``: stage 1 once,
    then trials, each a one-process stage 2 over every class plus a short evaluation of its distilled set."""
    size = dataset_size(config.store, config.dataset)
    known = capacity or this_machine()
    gpus, demands = tune_demands(config, known)
    gpu_bytes, gpu_memory = _gpu(known)
    memory = {
        f"{stage} ({'stage 1' if stage == STATIC else 'trial'})": worker_memory(
            stage_load(config.method, stage, preset, config.ipc, size, own_classes=size.classes),
            gpu=gpus > 0,
            gpu_memory_bytes=int(gpu_bytes * gpus) if gpus else gpu_bytes,
        )
        for stage in (STATIC, DYNAMIC)
    }
    return TaskPlan(
        command="raydd.tune",
        summary=f"{config.method} static-dynamic at IPC {config.ipc}: stage 1 once, {config.num_samples} trials "
        f"sweeping {' and '.join(SWEPT)}, {config.max_concurrent} at once",
        settings={
            "preset": {k: v for k, v in preset.to_dict().items() if k not in SWEPT},
            "gpus_per_trial": gpus,
            "cpus_per_trial": config.cpus_per_trial,
        },
        dataset=size,
        memory=memory,
        use_gpu=gpus > 0,
        gpu_share_bytes=int(gpus * gpu_bytes) if gpus else None,
        gpu_memory=gpu_memory if gpus > 0 else "",
        bytes_per_node=size.train_bytes,
        demands=tuple(demands),
        capacity=capacity,
        placement=refuse_unless_placed(demands, capacity),
    )
