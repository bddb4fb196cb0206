"""This machine as a one-node cluster: what a local Ray started here would offer."""

from __future__ import annotations

import os

import torch

from raydd.planning.resources import Capacity, NodeShape

# GPU memory assumed when a plan asks for GPUs that neither a cluster nor this machine shows: the A10G of
# cluster.yaml's gpu_worker (g5.2xlarge), 23,028 MiB.
ASSUMED_GPU_MEMORY = 23028 << 20
ASSUMED_GPU = "24.1 GB a GPU, assumed: the A10G of cluster.yaml's g5.2xlarge gpu_worker"


def this_machine() -> Capacity:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    memory = torch.cuda.get_device_properties(0).total_memory if gpus else None
    node = NodeShape(cpus=float(os.cpu_count() or 1), gpus=float(gpus), name="this machine", gpu_memory_bytes=memory)
    return Capacity(nodes=(node,), source="this machine (a local Ray would start with it)")


def gpu_size(size_bytes: int) -> str:
    return f"{size_bytes / 1e9:.1f} GB a GPU"
