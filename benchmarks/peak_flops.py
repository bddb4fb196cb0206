"""The machine's measured peak GFLOP/s for what distillation runs: a square matmul and MiniC3D's two big
Conv3D layers (at the reference shape, 8x64x64 clips, batch 64), in float32 and bfloat16, with torch on
the given number of threads.

    .venv/bin/python benchmarks/peak_flops.py --threads 2        # prints one JSON object

Each kernel is timed ``--repeats`` times after one warm-up call and the best time is kept (the peak: on a
shared machine the best run is the one least disturbed), in wall seconds (``gflops``) and in CPU seconds of
all threads (``gflops_per_cpu_s``: FLOPs per CPU second, what a machine loaded beyond its cores still
shows). bfloat16 runs the kernel on bfloat16 tensors, as autocast does. ``benchmarks/distill.py`` runs
this in its own process and compares each row's achieved GFLOP/s with the peak of the row's precision
(the largest of the kernels measured in that dtype).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

MATMUL_SIDE = 2048
# (input N, C, T, H, W; weight out, in, kT, kH, kW): MiniC3D width 128 on 8x64x64 clips, batch 64.
CONVS = {
    "conv3d_layer1": ((64, 3, 8, 64, 64), (64, 3, 3, 7, 7)),
    "conv3d_layer2": ((64, 64, 8, 16, 16), (128, 64, 3, 7, 7)),
}
STRIDE, PADDING = (1, 2, 2), (1, 3, 3)


def conv_flops(input_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> float:
    """2 x multiply-adds of a Conv3D with MiniC3D's stride and padding."""
    n, _, t, h, w = input_shape
    out_c, in_c, kt, kh, kw = weight_shape
    out = [(size + 2 * p - k) // s + 1 for size, p, k, s in zip((t, h, w), PADDING, (kt, kh, kw), STRIDE)]
    return 2.0 * n * out_c * math.prod(out) * in_c * kt * kh * kw


def best_seconds(run: Callable[[], object], repeats: int, device: torch.device | None = None) -> tuple[float, float]:
    """The best wall seconds and the best CPU seconds (all threads) of ``repeats`` calls (on a CUDA ``device``, each
    call waited for: its kernels run asynchronously)."""
    cuda = device is not None and device.type == "cuda"

    def call() -> None:
        run()
        if cuda:
            torch.cuda.synchronize(device)

    call()
    wall = cpu = math.inf
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        call()
        wall, cpu = min(wall, time.perf_counter() - started), min(cpu, time.process_time() - cpu_started)
    return wall, cpu


def measure(
    threads: int | None,
    repeats: int,
    device: torch.device | None = None,
    matmul_side: int = MATMUL_SIDE,
    convs: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = CONVS,
) -> dict[str, object]:
    """The peaks on ``device`` (default the CPU); benchmarks/gpu_check.py asks for a GPU's, and for tiny kernels in
    its dry run."""
    if threads:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    result: dict[str, object] = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    wall_rates: dict[str, dict[str, float]] = {}
    cpu_rates: dict[str, dict[str, float]] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        kernels: dict[str, tuple[float, Callable[[], object]]] = {}
        a = torch.randn(matmul_side, matmul_side, generator=generator).to(device, dtype)
        b = torch.randn(matmul_side, matmul_side, generator=generator).to(device, dtype)
        kernels["matmul"] = (2.0 * matmul_side**3, lambda a=a, b=b: a @ b)
        for kernel, (input_shape, weight_shape) in convs.items():
            x = torch.randn(input_shape, generator=generator).to(device, dtype)
            w = torch.randn(weight_shape, generator=generator).to(device, dtype)
            run = lambda x=x, w=w: F.conv3d(x, w, stride=STRIDE, padding=PADDING)  # noqa: E731
            kernels[kernel] = (conv_flops(input_shape, weight_shape), run)
        wall_rates[name], cpu_rates[name] = {}, {}
        for kernel, (flops, run) in kernels.items():
            wall, cpu = best_seconds(run, repeats, device)
            wall_rates[name][kernel], cpu_rates[name][kernel] = flops / wall / 1e9, flops / cpu / 1e9
    for key, rates in (("gflops", wall_rates), ("gflops_per_cpu_s", cpu_rates)):
        result[key] = {
            name: {**{k: round(v, 1) for k, v in by_kernel.items()}, "peak": round(max(by_kernel.values()), 1)}
            for name, by_kernel in rates.items()
        }
    result["loadavg"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per kernel; the best is kept")
    args = parser.parse_args()
    print(json.dumps(measure(args.threads, args.repeats)))


if __name__ == "__main__":
    main()
