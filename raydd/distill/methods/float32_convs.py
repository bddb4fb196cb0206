"""Under CPU bfloat16 autocast, the convolutions whose input is smaller than their kernel run in float32.

Why: oneDNN v3.x, as torch 2.14.1 ships it, computes such a convolution's bfloat16 weight gradient wrongly and not
deterministically on a CPU with AVX-512 BF16 (the jit avx512_core_bf16 backward-weights kernel): in
``benchmarks/onednn_bf16.py --grid``, 7 of 31 shapes gave relative errors of 1 to 6e12 against float32, NaN or inf, and
other values on a second call with identical inputs (the forward and the input gradient were right in all). MiniC3D's
later convolutions meet it on small clips (builtin 8x32x32: the third sees 4x2x2 maps against its 3x7x7 kernel), and
MTT's student, which trains through its weights, then diverged (parameters to 1e26-1e37) or crashed. Every convolution
with an input at least its (dilated) kernel's size in each dimension was right in that measurement; not every smaller
one is wrong, but the rule is the narrowest one that covers every wrong shape seen and needs no probing of the kernel.

Only on the CPU: CUDA runs cuDNN, which has no such fault known, so GPU convolutions stay in bfloat16. The
float32 convolutions are the small ones (``--cost`` times a student step with and without this; not yet on an idle
machine).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

_CONVOLUTIONS: frozenset[Callable[..., Tensor]] = frozenset({F.conv1d, F.conv2d, F.conv3d})
_ARGUMENTS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def input_smaller_than_kernel(
    input_shape: Sequence[int], kernel_shape: Sequence[int], dilation: int | Sequence[int] = 1
) -> bool:
    """Whether a convolution's input (N, C, *spatial) is smaller than its kernel's spatial extent (dilated) in
    some dimension: the shapes oneDNN's bf16 weight gradient gets wrong."""
    spatial = tuple(input_shape)[-len(kernel_shape) :]
    dilations = (dilation,) * len(kernel_shape) if isinstance(dilation, int) else tuple(dilation)
    return any(size < d * (k - 1) + 1 for size, k, d in zip(spatial, kernel_shape, dilations, strict=True))


def cpu_bf16_autocast() -> bool:
    """Whether CPU autocast to bfloat16 is on here (where the fault is met)."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def needs_float32(input: Tensor, weight: Tensor, dilation: int | Sequence[int] = 1) -> bool:
    """Whether this convolution must leave bfloat16: on the CPU, under bf16 autocast, input smaller than kernel."""
    return (
        input.device.type == "cpu"
        and cpu_bf16_autocast()
        and input_smaller_than_kernel(input.shape, weight.shape[2:], dilation)
    )


class _Float32SmallConvolutions(TorchFunctionMode):
    """Reroutes ``F.conv1d/2d/3d`` (what ``nn.Conv*d`` and ``functional_call`` end in) per call, from its shapes."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:  # noqa: ANN401 - whatever the intercepted function returns
        kwargs = kwargs or {}
        if func not in _CONVOLUTIONS:
            return func(*args, **kwargs)
        bound = dict(zip(_ARGUMENTS, args, strict=False)) | kwargs
        if not needs_float32(bound["input"], bound["weight"], bound.get("dilation", 1)):
            return func(*args, **kwargs)
        for name in ("input", "weight", "bias"):
            if bound.get(name) is not None:
                bound[name] = bound[name].float()
        with torch.autocast("cpu", enabled=False):
            return func(**bound)


@contextlib.contextmanager
def float32_small_convolutions() -> Iterator[None]:
    """Inside: every convolution that :func:`needs_float32` runs in float32 (forward, and so its backward and
    double backward); all others as they would. Outside CPU bf16 autocast it changes nothing."""
    with _Float32SmallConvolutions():
        yield
