"""Peak memory of one distillation worker, from the shapes of what it holds.

A worker holds, at its peak: the process itself (Python, torch, Ray Train: :data:`PROCESS_BYTES`), the
synthetic set with its gradient, optimiser state and the flat all-reduce buffer, the real-data index
(labels and per-class rows), and the larger of two phases of a matching sample:

* the real phase: one chunk of real clips gathered as uint8, standardised as float and embedded without
  a graph (a no-grad forward holds its input and two consecutive activations at a time);
* the synthetic phase: the worker's synthetic instances rendered (H for stage 2) and embedded with a
  graph (every activation autograd saves), then its backward (plus about one activation's gradient).

Activation sizes come from a forward of the real matching network on torch's ``meta`` device (shapes
only, no compute). Memory-mapped shards are page cache, shared by the node, and are not counted.
:data:`PROCESS_BYTES` and :data:`ALLOCATOR_SLACK` are measured (``benchmarks/plan_memory.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

# Anonymous memory of a worker-like process at a tiny workload: Python + torch + ray.train imported (360 MiB)
# plus what torch's first convolutions keep (kernel caches, thread pools). Measured with
# benchmarks/plan_memory.py on the built-in dataset (RssAnon, Linux x86_64, torch 2.x CPU build).
PROCESS_BYTES = 455 << 20
# What the CPU allocator holds beyond the live tensors at a peak (freed blocks not yet returned, fragmentation).
ALLOCATOR_SLACK = 1.10
# A CUDA worker: host memory the CUDA runtime and its libraries add, and the context each process holds on
# its GPU. Typical values for CUDA 12 (not measured here: this machine has no GPU).
CUDA_HOST_BYTES = 1 << 30
CUDA_CONTEXT_BYTES = 600 << 20
# torch's CUDA caching allocator rounds and keeps blocks; a resident dataset must leave this share free.
GPU_ALLOCATOR_SLACK = 1.20
# A worker keeps its classes' clips on its GPU when they take at most this share of the memory free at its
# start (the worker's own rule: RESIDENT_FRACTION of raydd/distill/real.py).
RESIDENT_FRACTION = 0.5
FLOAT = 4


@dataclasses.dataclass(frozen=True)
class ActivationProfile:
    """Per item (one clip or image) of a network's embedding forward, in bytes."""

    params: int  # parameters (values, not bytes)
    input_bytes: int
    saved_bytes: int  # what autograd keeps for the backward (activations, max-pool indices)
    no_grad_peak_bytes: int  # a no-grad forward's peak beyond its input: two consecutive activations
    largest_bytes: int  # the largest single activation


def activation_profile(
    build: Callable[[], nn.Module], item_shape: tuple[int, ...], forward: str = "embed"
) -> ActivationProfile:
    """Shapes of every leaf module's output for one item, from a forward on the ``meta`` device."""
    with torch.device("meta"):
        net = build()
    outputs: list[tuple[int, bool, bool]] = []  # (values, in place, max pool)

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        outputs.append(
            (output.numel(), bool(getattr(module, "inplace", False)), isinstance(module, (nn.MaxPool2d, nn.MaxPool3d)))
        )

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    with torch.no_grad():
        getattr(net, forward)(torch.empty((1, *item_shape), device="meta"))
    for handle in handles:
        handle.remove()
    sizes = [values * FLOAT for values, inplace, _ in outputs if not inplace]
    saved = FLOAT * math.prod(item_shape) + sum(sizes) + sum(2 * values * FLOAT for values, _, pool in outputs if pool)
    pairs = [a + b for a, b in zip(sizes, sizes[1:])] or sizes or [0]
    return ActivationProfile(
        params=sum(p.numel() for p in net.parameters()),
        input_bytes=FLOAT * math.prod(item_shape),
        saved_bytes=saved,
        no_grad_peak_bytes=max(pairs),
        largest_bytes=max(sizes, default=0),
    )


@dataclasses.dataclass(frozen=True)
class WorkerLoad:
    """What one worker of one stage handles: the numbers :func:`worker_memory` needs."""

    profile: ActivationProfile
    learnable_values: int  # synthetic values + H parameters that get a gradient and optimiser state
    frozen_values: int  # stage 2's static images (no gradient)
    synthetic_items: int  # instances this worker renders and embeds with a graph per sample
    render_values: int  # per synthetic item: what rendering it holds beyond the network input (H's input)
    real_chunk_clips: int  # real clips gathered, standardised and embedded at once
    real_clip_bytes: int  # uint8 bytes of one gathered real clip (whole clips, also for stage 1's frames)
    index_clips: int  # train clips the worker's real-data index covers (labels + per-class rows)
    resident_bytes: int  # the worker's classes as uint8, were they kept on its GPU
    init_clips: int = 0  # real clips the synthetic set starts from (gathered once, at build)
    student_values: int = 0  # MTT: the student's parameter vector at every unrolled step, and its gradient
    input_is_view: bool = False  # the network's synthetic input is a slice of the set itself (free tensors), not a copy
    shared_values: int = 0  # learnable values all-reduced through a flat buffer every iteration (H, MTT's lr)


@dataclasses.dataclass(frozen=True)
class WorkerMemory:
    host_bytes: int
    gpu_bytes: int  # 0 on a CPU worker
    resident: bool  # the worker's classes are kept on its GPU as uint8
    parts: dict[str, int]  # the peak's terms, for the printout


def worker_memory(load: WorkerLoad, *, gpu: bool, gpu_memory_bytes: int | None) -> WorkerMemory:
    p = load.profile
    # value, grad, momentum; shared parameters also pass through the flat all-reduce buffer
    synthetic_state = FLOAT * (3 * load.learnable_values + load.frozen_values + load.shared_values)
    network = FLOAT * (p.params + load.student_values)
    index = 16 * load.index_clips  # int64 labels + int64 per-class row positions
    init_phase = load.init_clips * (load.real_clip_bytes + p.input_bytes)
    real_phase = max(load.real_chunk_clips * (p.input_bytes + p.no_grad_peak_bytes), init_phase)
    # The backward frees saved activations as it goes; at its peak (the first layer) it adds about one largest
    # activation's gradient to what is still saved.
    saved = p.saved_bytes - (p.input_bytes if load.input_is_view else 0)
    synthetic_phase = load.synthetic_items * (saved + FLOAT * load.render_values + p.largest_bytes)
    gather = load.real_chunk_clips * load.real_clip_bytes
    if not gpu:
        compute = synthetic_state + network + max(real_phase, synthetic_phase)
        parts = {
            "process": PROCESS_BYTES,
            "synthetic set + grad + momentum": synthetic_state,
            "matching network": network,
            "real-data index": index,
            "real chunk (uint8 + float + activations)": gather + real_phase,
            "synthetic graph": synthetic_phase,
        }
        host = PROCESS_BYTES + index + int(ALLOCATOR_SLACK * (compute + gather))
        return WorkerMemory(host, 0, False, parts)
    device_compute = int(GPU_ALLOCATOR_SLACK * (synthetic_state + network + max(real_phase, synthetic_phase)))
    free = gpu_memory_bytes - CUDA_CONTEXT_BYTES if gpu_memory_bytes else None
    resident = free is not None and load.resident_bytes <= RESIDENT_FRACTION * free
    gpu_bytes = CUDA_CONTEXT_BYTES + device_compute + (load.resident_bytes if resident else 0)
    host = PROCESS_BYTES + CUDA_HOST_BYTES + index + int(ALLOCATOR_SLACK * (0 if resident else gather))
    parts = {
        "CUDA context": CUDA_CONTEXT_BYTES,
        "synthetic set + grad + momentum": synthetic_state,
        "matching network": network,
        "real chunk (float + activations)": real_phase,
        "synthetic graph": synthetic_phase,
    }
    if load.resident_bytes:  # the key says the worker reads real clips every iteration: the plan names where from
        parts["resident classes (uint8)"] = load.resident_bytes if resident else 0
    return WorkerMemory(host, gpu_bytes, resident and load.resident_bytes > 0, parts)
