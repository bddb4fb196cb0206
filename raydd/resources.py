"""Ray resource requests, a cluster's capacity, and whether the one fits the other; the automatic defaults
taken from a capacity (GPUs when there are some, CPUs per worker, GPU shares of a task); GPU memory by
accelerator; this machine as a one-node cluster. Pure data: reading a real cluster's capacity is
:mod:`raydd.cluster`'s job.

A request is a list of :class:`Demand`: ``count`` bundles of {CPU, GPU}. A *gang* demand (Ray Train's
workers) needs all its bundles placed at once; a task demand (experts, evaluation runs, trials) needs each
bundle to fit on some node (more than fit at once just queue). Capacity is the nodes alive now plus the
nodes the autoscaler may still launch (its node types, up to their ``max_workers``).
"""

from __future__ import annotations

import dataclasses
import math
import os

from raydd.errors import RayddError

MIB = 1 << 20
# GPU memory (what nvidia-smi reports as total) by the accelerator type Ray reports (resource
# ``accelerator_type:X``), and by EC2 family for an autoscaler's node types.
ACCELERATOR_MEMORY = {
    "T4": 15360 * MIB,
    "A10G": 23028 * MIB,
    "L4": 23034 * MIB,
    "L40S": 46068 * MIB,
    "V100": 16384 * MIB,
    "A100": 40960 * MIB,
    "A100-40G": 40960 * MIB,
    "A100-80G": 81920 * MIB,
    "H100": 81559 * MIB,
    "H200": 143771 * MIB,
}
EC2_GPU_MEMORY = {
    "g4dn": ACCELERATOR_MEMORY["T4"],
    "g5": ACCELERATOR_MEMORY["A10G"],
    "g6": ACCELERATOR_MEMORY["L4"],
    "g6e": ACCELERATOR_MEMORY["L40S"],
    "p3": ACCELERATOR_MEMORY["V100"],
    "p4d": ACCELERATOR_MEMORY["A100"],
    "p4de": ACCELERATOR_MEMORY["A100-80G"],
    "p5": ACCELERATOR_MEMORY["H100"],
    "p5e": ACCELERATOR_MEMORY["H200"],
}
# GPU memory assumed when a plan asks for GPUs that neither a cluster nor this machine shows: the A10G of
# cluster.yaml's gpu_worker (g5.2xlarge), 23,028 MiB.
ASSUMED_GPU_MEMORY = ACCELERATOR_MEMORY["A10G"]
ASSUMED_GPU = "24.1 GB a GPU, assumed: the A10G of cluster.yaml's g5.2xlarge gpu_worker"
# GPU share of one task when the flag is left automatic and the cluster has GPUs: four experts share a GPU
# (a MiniC3D expert at batch 256 needs a few GB), two tune trials do (each is a one-worker stage 2).
AUTO_GPUS_PER_EXPERT = 0.25
AUTO_GPUS_PER_TRIAL = 0.5


@dataclasses.dataclass(frozen=True)
class Demand:
    what: str  # "Ray Train workers", "expert tasks", ...
    count: int
    cpus: float
    gpus: float
    gang: bool  # all bundles at once (Ray Train) or tasks that queue

    def describe(self) -> str:
        shape = f"{{CPU: {self.cpus:g}" + (f", GPU: {self.gpus:g}}}" if self.gpus else "}")
        return f"{self.count} x {shape} {self.what}" + (" (all at once)" if self.gang else " (queued beyond what fits)")


@dataclasses.dataclass(frozen=True)
class NodeShape:
    cpus: float
    gpus: float
    name: str = ""  # node type or address, for messages
    gpu_memory_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class Capacity:
    nodes: tuple[NodeShape, ...]  # alive now (the head included)
    launchable: tuple[tuple[NodeShape, int], ...] = ()  # autoscaler node types and how many more of each
    source: str = ""  # what was read, for the printout

    def all_nodes(self) -> list[NodeShape]:
        return list(self.nodes) + [shape for shape, count in self.launchable for _ in range(count)]

    @property
    def has_gpus(self) -> bool:
        return any(node.gpus >= 1 for node in self.all_nodes())

    def describe(self) -> str:
        alive = ", ".join(_shape(n) for n in self.nodes) or "none"
        more = ", ".join(f"up to {count} more {_shape(s)}" for s, count in self.launchable if count)
        return f"{self.source}: nodes {alive}" + (f"; autoscaler: {more}" if more else "")

    def gpu_memory_bytes(self) -> int | None:
        sizes = [n.gpu_memory_bytes for n in self.all_nodes() if n.gpus >= 1 and n.gpu_memory_bytes]
        return min(sizes) if sizes else None


def node_shape(resources: dict[str, float], name: str) -> NodeShape:
    """A node from the resources Ray reports; its GPU memory from its ``accelerator_type:X`` resource."""
    accelerators = [key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:")]
    memory = ACCELERATOR_MEMORY.get(accelerators[0]) if accelerators else None
    return NodeShape(
        cpus=float(resources.get("CPU", 0)), gpus=float(resources.get("GPU", 0)), name=name, gpu_memory_bytes=memory
    )


def this_machine() -> Capacity:
    """This machine as a one-node cluster: what a local Ray started here would offer."""
    import torch  # here: the rest of this module is read by commands that never need torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    memory = torch.cuda.get_device_properties(0).total_memory if gpus else None
    node = NodeShape(cpus=float(os.cpu_count() or 1), gpus=float(gpus), name="this machine", gpu_memory_bytes=memory)
    return Capacity(nodes=(node,), source="this machine (a local Ray would start with it)")


def gpu_size(size_bytes: int) -> str:
    return f"{size_bytes / 1e9:.1f} GB a GPU"


def capacity_from_autoscaler(
    config: dict, alive: tuple[NodeShape, ...], source: str, gpu_memory: dict[str, int] | None = None
) -> Capacity:
    """``alive`` plus what an autoscaler config (``cluster.yaml``'s keys) may still launch: each worker type up
    to its ``max_workers`` (less the alive nodes of its shape), all of them up to the cluster's ``max_workers``.
    ``gpu_memory`` maps an EC2 family (``g5``) to its GPU's memory."""
    head = config.get("head_node_type")
    room = int(config.get("max_workers", 0)) - max(0, len(alive) - 1)  # workers alive: all but the head
    launchable = []
    for name, node_type in (config.get("available_node_types") or {}).items():
        if name == head:
            continue
        resources = node_type.get("resources") or {}
        family = str((node_type.get("node_config") or {}).get("InstanceType", "")).split(".")[0]
        memory = (gpu_memory or {}).get(family) if resources.get("GPU") else None
        shape = NodeShape(float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), name, memory)
        running = sum(1 for node in alive if (node.cpus, node.gpus) == (shape.cpus, shape.gpus))
        launchable.append((shape, max(0, min(int(node_type.get("max_workers", 0)) - running, room))))
    return Capacity(nodes=alive, launchable=tuple(launchable), source=source)


def _shape(node: NodeShape) -> str:
    text = f"{{CPU: {node.cpus:g}" + (f", GPU: {node.gpus:g}}}" if node.gpus else "}")
    return f"{node.name} {text}" if node.name else text


@dataclasses.dataclass(frozen=True)
class Placement:
    fits: bool
    nodes_used: int  # distinct nodes the gang demands land on (0 when it does not fit)
    reason: str  # the one line of a refusal, else a summary
    launched: tuple[tuple[str, int], ...] = ()  # autoscaler node types the gang demands need launched, how many

    def describe_launches(self) -> str:
        """``2 x cpu_worker`` (what the autoscaler is predicted to launch), or ``none``."""
        return ", ".join(f"{count} x {name}" for name, count in self.launched) or "none"


def place(demands: list[Demand], capacity: Capacity) -> Placement:
    """First-fit-decreasing of every gang demand's bundles onto the nodes (alive, then launchable); each
    task demand needs one node able to take one bundle. Gang demands are placed one after the other."""
    nodes = capacity.all_nodes()
    used: set[int] = set()
    for demand in demands:
        free = [[node.cpus, node.gpus] for node in nodes]
        if not demand.gang:
            if not any(_fits(demand, cpu, gpu) for cpu, gpu in free):
                return Placement(False, 0, _refusal(demand, capacity, 0))
            continue
        placed = 0
        for _ in range(demand.count):
            for index, slot in enumerate(free):
                if _fits(demand, *slot):
                    slot[0] -= demand.cpus
                    slot[1] -= demand.gpus
                    used.add(index)
                    placed += 1
                    break
            else:
                return Placement(False, 0, _refusal(demand, capacity, placed))
    launched: dict[str, int] = {}
    for index in sorted(used):
        if index >= len(capacity.nodes):  # past the alive nodes: one the autoscaler must launch
            launched[nodes[index].name] = launched.get(nodes[index].name, 0) + 1
    summary = f"fits {capacity.describe()}"
    if capacity.launchable:
        summary += f"; the autoscaler launches {', '.join(f'{c} x {n}' for n, c in launched.items()) or 'none'}"
    return Placement(True, len(used), summary, tuple(launched.items()))


def _fits(demand: Demand, cpus: float, gpus: float) -> bool:
    return demand.cpus <= cpus + 1e-9 and demand.gpus <= gpus + 1e-9


def _refusal(demand: Demand, capacity: Capacity, placed: int) -> str:
    nodes = capacity.all_nodes()
    total_cpus, total_gpus = sum(n.cpus for n in nodes), sum(n.gpus for n in nodes)
    if demand.gang:
        return (
            f"{demand.describe()} cannot be placed: only {placed} fit on {capacity.describe()} "
            f"({total_cpus:g} CPUs, {total_gpus:g} GPUs in all); lower --workers or the CPUs/GPUs per worker"
        )
    return f"one of {demand.describe()} fits on no node of {capacity.describe()}: lower its CPUs/GPUs"


def refuse_unless_placed(demands: list[Demand], capacity: Capacity | None) -> Placement | None:
    if capacity is None:
        return None
    placement = place(demands, capacity)
    if not placement.fits:
        raise RayddError(placement.reason)
    return placement


def auto_use_gpu(flag: bool | None, capacity: Capacity | None) -> bool:
    """``--use-gpu``/``--no-use-gpu`` win; else GPUs when the cluster has (or can launch) a GPU node."""
    if flag is not None:
        return flag
    return capacity is not None and capacity.has_gpus


def auto_gpus(flag: float | None, share: float, capacity: Capacity | None) -> float:
    """A task's GPUs: the flag, else ``share`` of a GPU where the cluster has (or can launch) a GPU node, else 0."""
    return flag if flag is not None else (share if auto_use_gpu(None, capacity) else 0.0)


def auto_cpus_per_worker(flag: float | None, workers: int, use_gpu: bool, capacity: Capacity | None) -> float:
    """CPU workers share the cluster's CPUs (at most one node's each); a GPU worker takes its node's CPUs
    per GPU. 1 when nothing is known."""
    if flag is not None:
        return flag
    nodes = capacity.all_nodes() if capacity is not None else []
    if use_gpu:
        per_gpu = [math.floor(n.cpus / n.gpus) for n in nodes if n.gpus >= 1]
        return float(max(1, min(per_gpu))) if per_gpu else 1.0
    sizes = [math.floor(n.cpus) for n in nodes if n.cpus >= 1]
    for cpus in range(max(sizes, default=1), 1, -1):  # the most CPUs a worker can have with all of them placed
        if sum(size // cpus for size in sizes) >= workers:
            return float(cpus)
    return 1.0


def evaluation_devices(capacity: Capacity | None) -> dict[str, float]:
    """What each evaluation run's Ray task reserves when no distillation chose for it: one GPU and its node's CPUs
    per GPU where the cluster has (or can launch) a GPU node, else nothing beyond the default 1 CPU."""
    if not auto_use_gpu(None, capacity):
        return {}
    return {"gpus_per_run": 1.0, "cpus_per_run": auto_cpus_per_worker(None, 1, True, capacity)}


def tasks_at_once(cpus: float, gpus: float, capacity: Capacity | None) -> int:
    """How many tasks of {CPU: cpus, GPU: gpus} the cluster holds at once, the nodes its autoscaler may
    launch included (so that a cluster scaled to zero still gets enough tasks submitted to scale it up)."""
    nodes = capacity.all_nodes() if capacity is not None else []
    fits = [
        min(math.floor(n.cpus / cpus + 1e-9), math.floor(n.gpus / gpus + 1e-9) if gpus else math.inf) for n in nodes
    ]
    return max(1, int(sum(fits)))
