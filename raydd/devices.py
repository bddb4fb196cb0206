"""Device choice in one place: no ``"cuda"`` literals anywhere else."""

from __future__ import annotations

import torch

from raydd.errors import RayddError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the first GPU if there is one (CUDA, then Apple MPS), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RayddError("--device cuda was asked for but no CUDA GPU is visible: use --device auto or cpu")
    if name not in DEVICE_CHOICES:
        raise RayddError(f"unknown device {name!r}: use one of {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16")


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively: a CUDA GPU that supports bfloat16, or a CPU with
    AVX-512 BF16 or AMX instructions (oneDNN's bf16 kernels; without them bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":  # T4, V100: bf16 only emulated (slower than fp32), so not "fast"
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
        return any(probe() for probe in probes if probe is not None)
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the work ``precision`` allows lower precision for: bfloat16 for ``bf16``, and for
    ``auto`` where :func:`fast_bf16`; None (float32) otherwise."""
    if precision not in PRECISIONS:
        raise RayddError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision == "auto" and fast_bf16(device)):
        return torch.bfloat16
    return None


def configure_cuda(device: torch.device, *, fixed_shapes: bool) -> None:
    """The process-wide CUDA choices, made explicitly (nothing on other devices).

    float32 means IEEE float32: cuDNN's convolutions default to TF32 on Ampere and newer (10 mantissa bits), so
    bounds and golden curves measured on the CPU would not carry over; bf16 is the chosen lower precision
    (``--precision``). ``fixed_shapes`` (distillation: every iteration has the same shapes) lets cuDNN time its
    algorithms once per shape (``cudnn.benchmark``); it may pick non-deterministic ones, so a GPU run matches a CPU
    run to tolerance, never bitwise."""
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cudnn.rnn.fp32_precision = "ieee"
    torch.backends.cudnn.benchmark = fixed_shapes


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the host) on ``device`` without the host waiting for the copy: on CUDA it is pinned first
    (a copy from pageable memory is staged by the driver and may block the host) and sent ``non_blocking``; the
    pinned block comes from torch's caching host allocator, which keeps it until the copy has finished, so the
    caller may drop it at once. Elsewhere ``.to(device, non_blocking=True)`` (on the CPU: the tensor itself)."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device, non_blocking=True)
    return tensor.pin_memory().to(device, non_blocking=True)


def module_to_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """:func:`to_device` of every parameter and buffer of ``module`` (a network built on the host each sample)."""
    return module._apply(lambda tensor: to_device(tensor, device))
