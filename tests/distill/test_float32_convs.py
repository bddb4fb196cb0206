"""Under CPU bf16 autocast, convolutions whose input is smaller than the kernel run in float32: their weight
gradient is float32's, the same on every call (oneDNN's bf16 one is wrong there: benchmarks/onednn_bf16.py), and
bf16 MTT on tiny clips stays finite and near float32's loss."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from raydd.distill.methods.base import MatchingSample
from raydd.distill.methods.float32_convs import float32_small_convolutions, input_smaller_than_kernel
from raydd.distill.methods.mtt import ExpertBank

from .test_mtt import _free_tensors, _method
from .tiny_store import write_experts

CPU = torch.device("cpu")
# (input, weight, stride, padding): shapes whose bf16 weight gradient oneDNN 3.12 (torch 2.14.1) got wrong on an
# AVX-512 BF16 CPU: MiniC3D's third convolution at builtin size (relative error 1-3, or NaN), a 3x3x3 kernel on
# 2x2x2 maps (error 1, not deterministic), a 7x7 kernel on 1x1 maps (error up to 6e12).
SMALL_INPUTS = [
    ((8, 32, 4, 2, 2), (32, 32, 3, 7, 7), (1, 2, 2), (1, 3, 3)),
    ((8, 32, 2, 2, 2), (32, 32, 3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ((8, 32, 1, 1), (32, 32, 7, 7), (2, 2), (3, 3)),
]
BF16_RELATIVE_ERROR = 0.02  # bf16's rounding of a whole gradient: ~0.003 measured where oneDNN is right


def _weight_gradient(shapes: tuple[tuple[int, ...], ...], *, bf16: bool) -> torch.Tensor:
    input_shape, weight_shape, stride, padding = shapes
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0))
    w = (torch.randn(weight_shape, generator=torch.Generator().manual_seed(1)) * 0.05).requires_grad_(True)
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    context = contextlib.ExitStack()
    if bf16:
        context.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        context.enter_context(float32_small_convolutions())
    with context:
        y = conv(x, w, stride=stride, padding=padding)
    (y.float() * torch.randn(y.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    return w.grad


@pytest.mark.parametrize("shapes", SMALL_INPUTS, ids=["minic3d-builtin-third", "3x3x3-on-2", "7x7-on-1"])
def test_small_input_weight_gradient_is_float32s_and_repeats(shapes: tuple[tuple[int, ...], ...]) -> None:
    fp32 = _weight_gradient(shapes, bf16=False)
    first, second = _weight_gradient(shapes, bf16=True), _weight_gradient(shapes, bf16=True)
    assert torch.isfinite(first).all()
    assert float((first - fp32).norm() / fp32.norm()) < BF16_RELATIVE_ERROR
    assert torch.equal(first, second)


def test_only_small_inputs_leave_bf16_and_only_under_cpu_autocast() -> None:
    small, large = torch.randn(2, 4, 4, 2, 2), torch.randn(2, 4, 8, 8, 8)
    weight = torch.randn(4, 4, 3, 7, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16), float32_small_convolutions():
        assert F.conv3d(small, weight, padding=(1, 3, 3)).dtype == torch.float32
        assert F.conv3d(large, weight, padding=(1, 3, 3)).dtype == torch.bfloat16
        assert torch.nn.Conv3d(4, 4, (3, 7, 7), padding=(1, 3, 3))(small).dtype == torch.float32
    with float32_small_convolutions():  # no autocast: nothing to change
        assert torch.equal(F.conv3d(small, weight, padding=(1, 3, 3)), F.conv3d(small, weight, padding=(1, 3, 3)))
        assert F.conv3d(small.bfloat16(), weight.bfloat16(), padding=(1, 3, 3)).dtype == torch.bfloat16


def test_input_smaller_than_kernel_counts_every_dimension_and_dilation() -> None:
    assert input_smaller_than_kernel((8, 32, 4, 2, 2), (3, 7, 7))
    assert input_smaller_than_kernel((8, 32, 2, 8, 8), (3, 7, 7))  # time alone
    assert not input_smaller_than_kernel((8, 32, 3, 7, 7), (3, 7, 7))  # equal is not smaller
    assert input_smaller_than_kernel((8, 32, 4, 4), (3, 3), dilation=2)  # a 3x3 kernel dilated by 2 spans 5
    assert not input_smaller_than_kernel((8, 32, 5, 5), (3, 3), dilation=(2, 2))


@pytest.fixture(scope="module")
def wide_bank(tmp_path_factory: pytest.TempPathFactory) -> ExpertBank:
    """MiniC3D width 16 on the tiny 4x16x16 clips: its second and third convolutions see 4x4x4 and 2x1x1 maps
    against 3x7x7 kernels, with enough channels (16) for oneDNN's bf16 weight gradient to go wrong there (without
    the fix the losses were NaN; at conftest's width 8 it happens to be right)."""
    folder = Path(tmp_path_factory.mktemp("wide-experts"))
    write_experts(str(folder), width=16, epochs=3)
    return ExpertBank(str(folder), make_them="python -m raydd.experts")


def _losses(bank: ExpertBank, precision: str, iterations: int = 2) -> list[float]:
    """A few MTT iterations: matching loss, then an SGD step of the synthetic set and the learned lr."""
    method = _method(bank, memory_bounded=False, precision=precision)
    synthetic = copy.deepcopy(_free_tensors())
    learnables = [p for p in synthetic.parameters() if p.requires_grad] + method.learnable()
    optimiser = torch.optim.SGD(learnables, lr=100.0)
    losses = []
    for iteration in range(iterations):
        optimiser.zero_grad()
        sample = MatchingSample(torch.Generator().manual_seed(iteration), iteration, None, CPU)
        losses.append(float(method.accumulate(synthetic, sample, 1.0)))  # a 0-d device tensor: read it here
        optimiser.step()
        method.after_step(synthetic, torch.Generator())
    return losses


def test_bf16_mtt_on_tiny_clips_stays_finite_and_near_float32(wide_bank: ExpertBank) -> None:
    fp32, bf16 = _losses(wide_bank, "fp32"), _losses(wide_bank, "bf16")
    assert fp32 != bf16  # the bf16 path really ran
    for loss_fp32, loss_bf16 in zip(fp32, bf16, strict=True):
        assert loss_bf16 == pytest.approx(loss_fp32, rel=0.01)
