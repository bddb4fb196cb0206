"""``--plan``'s printout: one screen a platform engineer reads before renting the cluster."""

from __future__ import annotations

from raydd.distill.methods.catalog import method_info
from raydd.planning.distill import DistillPlan
from raydd.planning.memory import WorkerMemory
from raydd.planning.sizes import DatasetSize
from raydd.planning.tasks import TaskPlan
from raydd.resources import Capacity, Demand, Placement

PRIVATE = "private memory; memory-mapped shards are shared page cache, not counted"


def gb(value: int) -> str:
    return f"{value / 1e9:.2f} GB" if value >= 1e8 else f"{value / 1e6:.1f} MB"


def _dataset(size: DatasetSize) -> list[str]:
    t, h, w, c = size.clip_shape
    return [
        f"dataset     {size.name}: {size.classes} classes, {size.train_clips:,} train / {size.test_clips:,} test clips "
        f"of {t}x{h}x{w}x{c} "
        f"({size.clip_bytes / 1e3:.1f} kB a clip; train {gb(size.train_bytes)}, test {gb(size.test_bytes)})",
        f"            from {size.source}",
    ]


def _memory(name: str, memory: WorkerMemory, gpu: bool, share_bytes: int | None = None) -> str:
    text = f"  {name:<16} host {gb(memory.host_bytes)}"
    if gpu:
        text += f", GPU {gb(memory.gpu_bytes)}"
        if "resident classes (uint8)" in memory.parts:
            where = (
                "resident on the GPU as uint8" if memory.resident else "streamed from the node cache: they do not fit"
            )
            text += f" (own classes {where})"
        if share_bytes:
            verdict = "fits" if memory.gpu_bytes <= share_bytes else "DOES NOT FIT: raise the GPUs per task"
            text += f" of its {gb(share_bytes)} GPU share: {verdict}"
    biggest = sorted(((v, k) for k, v in memory.parts.items() if v), reverse=True)[:3]
    return text + "; largest terms: " + ", ".join(f"{k} {gb(v)}" for v, k in biggest)


def _resources(demands: tuple[Demand, ...], capacity: Capacity | None, placement: Placement | None) -> list[str]:
    lines = ["resources   " + "; ".join(d.describe() for d in demands)]
    if capacity is None:
        lines.append("cluster     none given (--ray-address / RAY_ADDRESS): not checked against one")
    elif placement is not None:
        lines.append(f"cluster     {placement.reason}")
    return lines


def _gpu_verdict(plan: DistillPlan) -> str:
    if plan.worker_gpu_bytes <= plan.gpu_memory_bytes:
        return f" of {gb(plan.gpu_memory_bytes)}: fits"
    hint = (
        "--memory-bounded, or fewer syn_steps/batch_syn"
        if method_info(plan.method).unrolls_student
        else "more workers or a lower batch_real"
    )
    return f" of {gb(plan.gpu_memory_bytes)}: DOES NOT FIT (try {hint})"


def format_distill(plan: DistillPlan) -> str:
    preset = ", ".join(f"{k}={v}" for k, v in plan.preset.to_dict().items() if v is not None)
    device = f"GPU ({plan.gpu_memory})" if plan.use_gpu else "CPU"
    lines = [
        f"plan        python -m raydd.distill: {plan.method} {plan.paradigm}, "
        f"{plan.workers} Ray Train worker(s) on {device}, "
        f"{plan.cpus_per_worker:g} CPU(s) each, --worker-split {plan.split} "
        f"({plan.classes_per_worker} classes a worker)",
        f"preset      {preset}",
        *_dataset(plan.dataset),
        f"memory      per worker, at its peak ({PRIVATE}):",
        *(_memory(stage, memory, plan.use_gpu) for stage, memory in plan.stage_memory.items()),
        f"            worker peak: host {gb(plan.worker_host_bytes)}"
        + (f", GPU {gb(plan.worker_gpu_bytes)}{_gpu_verdict(plan)}" if plan.use_gpu else ""),
        f"reads       {gb(plan.bytes_per_node)} per node, once for the whole run (every train shard: shards mix classes"
        + ("; + the test split for the closing evaluation)" if plan.bytes_per_node > plan.dataset.train_bytes else ")")
        + (
            f"; {plan.nodes} node(s): {gb(plan.nodes * plan.bytes_per_node)} from the store in all"
            if plan.nodes
            else ""
        ),
        *_resources(plan.demands, plan.capacity, plan.placement),
    ]
    return "\n".join(lines)


def format_tasks(plan: TaskPlan) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in plan.settings.items() if k != "preset")
    lines = [
        f"plan        python -m {plan.command}: {plan.summary} "
        f"on {'GPU (' + plan.gpu_memory + ')' if plan.use_gpu else 'CPU'}; {settings}"
    ]
    if "preset" in plan.settings:
        lines.append(
            "preset      " + ", ".join(f"{k}={v}" for k, v in plan.settings["preset"].items() if v is not None)
        )
    lines += [
        *_dataset(plan.dataset),
        f"memory      per task, at its peak ({PRIVATE}):",
        *(_memory(name, memory, plan.use_gpu, plan.gpu_share_bytes) for name, memory in plan.memory.items()),
        f"reads       {gb(plan.bytes_per_node)} per node, once (every shard its tasks read: shards mix classes)",
        *_resources(plan.demands, plan.capacity, plan.placement),
    ]
    return "\n".join(lines)
