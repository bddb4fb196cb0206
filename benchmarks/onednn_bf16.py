"""oneDNN's bfloat16 convolution weight gradient on the CPU against float32's, for inputs smaller than the kernel.

    .venv/bin/python benchmarks/onednn_bf16.py                     # MiniC3D's third convolution at builtin size
    .venv/bin/python benchmarks/onednn_bf16.py --grid              # the shape sweep: a table, and JSON (~30 s)
    .venv/bin/python benchmarks/onednn_bf16.py --cost              # seconds per bf16 MTT student step, fix on/off

Each row runs one convolution (conv2d or conv3d, seeded input, weight and output gradient) in float32, then twice
under CPU bfloat16 autocast on identical inputs, and reports the relative error of the bf16 output, input gradient
and weight gradient against float32's, the weight gradient's non-finite count, whether the two bf16 calls gave the
same bits, and the weight gradient's error with raydd's fix
(:func:`raydd.distill.methods.float32_convs.float32_small_convolutions`). ``smaller`` marks a row whose input is
smaller than the kernel in some dimension. ``--grid`` sweeps MiniC3D's convolutions at the tiny test clips
(4x16x16), builtin (8x32x32) and the reference shape (8x64x64), and generic 3x3(x3) and 7x7 kernels on 1-8 sided
inputs; it prints a Markdown table and writes benchmarks/results/onednn_bf16.json. On torch 2.14.1 with an
AVX-512 BF16 CPU the wrong rows (error ~1, NaN, inf, not deterministic) all have ``smaller``; without bf16 hardware
oneDNN emulates bf16 and the rows may all be right.

``--cost``: one MTT student step (MiniC3D width 128, 10 classes, 10 clips; forward under autocast, its gradient
with a graph, and the backward through that, as the unrolled student does) in bf16 with and without the fix, best
of ``--repeats`` (timed in turn) after a warm-up, at builtin (8x32x32) and the reference shape (8x64x64).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from raydd.distill.methods.float32_convs import float32_small_convolutions, input_smaller_than_kernel
from raydd.models.minic3d import MiniC3D

STRIDE3, PADDING3 = (1, 2, 2), (1, 3, 3)  # MiniC3D's


def _relative(a: Tensor, reference: Tensor) -> float:
    return float((a.float() - reference).norm() / reference.norm())


def _run(
    x: Tensor, w: Tensor, grad_out: Tensor | None, stride: tuple[int, ...], padding: tuple[int, ...], mode: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(output, input gradient, weight gradient, output gradient used) in ``mode``: fp32, bf16, or bf16 with the fix."""
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    fix = float32_small_convolutions() if mode == "fixed" else contextlib.nullcontext()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"), fix:
        y = conv(x, w, stride=stride, padding=padding)
    if grad_out is None:
        grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    (y.float() * grad_out).sum().backward()
    return y.detach().float(), x.grad, w.grad, grad_out


def measure(
    input_shape: tuple[int, ...], kernel_shape: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...]
) -> dict[str, Any]:
    """One row: ``kernel_shape`` is (out, in, *kernel)."""
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0))
    w = torch.randn(kernel_shape, generator=torch.Generator().manual_seed(1)) / math.sqrt(math.prod(kernel_shape[1:]))
    y32, gx32, gw32, grad_out = _run(x, w, None, stride, padding, "fp32")
    y, gx, gw, _ = _run(x, w, grad_out, stride, padding, "bf16")
    _, _, gw_again, _ = _run(x, w, grad_out, stride, padding, "bf16")
    _, _, gw_fixed, _ = _run(x, w, grad_out, stride, padding, "fixed")
    return {
        "conv": f"conv{len(kernel_shape) - 2}d",
        "input": list(input_shape),
        "kernel": list(kernel_shape),
        "stride": list(stride),
        "padding": list(padding),
        "smaller": input_smaller_than_kernel(input_shape, kernel_shape[2:]),
        "output_error": _relative(y, y32),
        "input_grad_error": _relative(gx, gx32),
        "weight_grad_error": _relative(gw, gw32),
        "weight_grad_nonfinite": int((~gw.isfinite()).sum()),
        "deterministic": torch.equal(gw.view(torch.int32), gw_again.view(torch.int32)),
        "fixed_weight_grad_error": _relative(gw_fixed, gw32),
    }


def minic3d_convolutions(frames: int, side: int, width: int = 128, batch: int = 8) -> list[tuple[tuple[int, ...], ...]]:
    """(input shape, kernel shape) of each of MiniC3D's 3x7x7 convolutions on (batch, 3, frames, side, side) clips."""
    net = MiniC3D(num_classes=10, frames=frames, height=side, width=side, widths=(width // 2, width, width))
    shapes: list[tuple[tuple[int, ...], ...]] = []
    hooks = [
        conv.register_forward_pre_hook(lambda m, inputs: shapes.append((tuple(inputs[0].shape), tuple(m.weight.shape))))
        for conv in net.features
        if isinstance(conv, torch.nn.Conv3d)
    ]
    with torch.no_grad():
        net(torch.zeros(batch, 3, frames, side, side))
    for hook in hooks:
        hook.remove()
    return shapes


def grid() -> Iterator[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    for frames, side in ((4, 16), (8, 32), (8, 64)):
        for input_shape, kernel_shape in minic3d_convolutions(frames, side):
            yield input_shape, kernel_shape, STRIDE3, PADDING3
    for sides in ((2, 1, 1), (2, 7, 7), (4, 2, 2), (4, 4, 4), (3, 3, 3), (1, 7, 7), (4, 8, 8)):
        yield (8, 32, *sides), (32, 32, 3, 7, 7), STRIDE3, PADDING3
    for side in (1, 2, 3, 4, 8):
        yield (8, 32, side, side, side), (32, 32, 3, 3, 3), (1, 1, 1), (1, 1, 1)
        yield (8, 32, side, side), (32, 32, 3, 3), (1, 1), (1, 1)
        yield (8, 32, side, side), (32, 32, 7, 7), (2, 2), (3, 3)


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| conv | input | kernel | smaller | output err | input-grad err | weight-grad err | non-finite | "
        "deterministic | fixed err |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['conv']} | {'x'.join(map(str, r['input']))} | {'x'.join(map(str, r['kernel']))} | "
            f"{'yes' if r['smaller'] else 'no'} | {r['output_error']:.2g} | {r['input_grad_error']:.2g} | "
            f"{r['weight_grad_error']:.2g} | {r['weight_grad_nonfinite']} | {'yes' if r['deterministic'] else 'NO'} | "
            f"{r['fixed_weight_grad_error']:.2g} |"
        )
    return "\n".join(lines)


def student_step(frames: int, side: int, fixed: bool) -> Callable[[], None]:
    """One bf16 MTT student step (see the module's docstring), with the fix or without."""
    torch.manual_seed(0)
    net = MiniC3D(num_classes=10, frames=frames, height=side, width=side, widths=(64, 128, 128))
    names = [name for name, _ in net.named_parameters()]
    start = [p.detach().clone() for p in net.parameters()]
    clips = torch.randn(10, 3, frames, side, side, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(10)

    def step() -> None:
        theta = [p.clone().requires_grad_(True) for p in start]
        fix = float32_small_convolutions() if fixed else contextlib.nullcontext()
        with torch.autocast("cpu", dtype=torch.bfloat16), fix:
            logits = functional_call(net, dict(zip(names, theta, strict=True)), (clips,)).float()
        grads = torch.autograd.grad(F.cross_entropy(logits, labels), theta, create_graph=True)
        after = [p - 0.01 * g for p, g in zip(theta, grads, strict=True)]
        sum(((a - s) ** 2).sum() for a, s in zip(after, start, strict=True)).backward()

    return step


def cost(repeats: int) -> list[dict[str, Any]]:
    """Best wall and CPU seconds of a step with and without the fix. The two are timed in turn, step by step, so
    that a neighbour's load falls on both alike (on a shared machine the best of each is the least disturbed)."""
    rows = []
    for frames, side in ((8, 32), (8, 64)):
        steps = {"bf16": student_step(frames, side, False), "bf16_fixed": student_step(frames, side, True)}
        wall = dict.fromkeys(steps, math.inf)
        cpu = dict.fromkeys(steps, math.inf)
        for step in steps.values():
            step()  # warm-up: oneDNN creates its kernels on first use
        for _ in range(repeats):
            for name, step in steps.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                step()
                wall[name] = min(wall[name], time.perf_counter() - started)
                cpu[name] = min(cpu[name], time.process_time() - cpu_started)
        rows.append(
            {
                "clips": f"{frames}x{side}x{side}",
                **{f"{name}_s": seconds for name, seconds in wall.items()},
                **{f"{name}_cpu_s": seconds for name, seconds in cpu.items()},
                "overhead": wall["bf16_fixed"] / wall["bf16"] - 1,
                "cpu_overhead": cpu["bf16_fixed"] / cpu["bf16"] - 1,
            }
        )
    return rows


def _onednn_version() -> str | None:
    found = re.search(r"(?:oneDNN|MKL-DNN) (v[0-9.]+)", torch.__config__.show())
    return found.group(1) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", action="store_true", help="sweep the shapes; write --output")
    parser.add_argument("--cost", action="store_true", help="time a bf16 MTT student step with and without the fix")
    parser.add_argument("--repeats", type=int, default=8, help="--cost: timed steps per setting; the best is kept")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/onednn_bf16.json"))
    args = parser.parse_args()
    environment = {
        "torch": torch.__version__,
        "onednn": _onednn_version(),
        "avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
    }
    if args.cost:
        rows = cost(args.repeats)
        for row in rows:
            print(
                f"{row['clips']}: bf16 student step {row['bf16_s']:.3f} s, with the fix {row['bf16_fixed_s']:.3f} s "
                f"({row['overhead']:+.1%}; CPU seconds {row['bf16_cpu_s']:.3f} and {row['bf16_fixed_cpu_s']:.3f}, "
                f"{row['cpu_overhead']:+.1%})"
            )
        print(json.dumps({**environment, "cost": rows}))
        return
    shapes: list[Any] = list(grid()) if args.grid else [(*minic3d_convolutions(8, 32)[2], STRIDE3, PADDING3)]
    rows = [measure(*shape) for shape in shapes]
    print(json.dumps(environment))
    print(_table(rows))
    wrong = [r for r in rows if not (r["weight_grad_error"] < 0.05 and r["deterministic"])]
    print(f"{len(wrong)} of {len(rows)} rows wrong, {sum(r['smaller'] for r in wrong)} of them with smaller input")
    if args.grid:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({**environment, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
