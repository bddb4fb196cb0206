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
