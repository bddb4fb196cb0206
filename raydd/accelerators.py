"""GPU memory by accelerator, and a node's shape from the resources Ray reports: what :mod:`raydd.cluster` plans with.

Ray reports an accelerator as the resource ``accelerator_type:X``; an autoscaler's node types name EC2 instance types,
whose family gives the GPU.
"""

from __future__ import annotations

from raydd.planning.resources import NodeShape

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


def node_shape(resources: dict[str, float], name: str) -> NodeShape:
    accelerators = [key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:")]
    memory = ACCELERATOR_MEMORY.get(accelerators[0]) if accelerators else None
    return NodeShape(
        cpus=float(resources.get("CPU", 0)), gpus=float(resources.get("GPU", 0)), name=name, gpu_memory_bytes=memory
    )
