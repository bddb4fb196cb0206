"""Device choices: CUDA settings touch nothing on the CPU; precision names are checked."""

from __future__ import annotations

import pytest
import torch

from raydd.devices import autocast_dtype, configure_cuda
from raydd.errors import RayddError


def test_cuda_settings_leave_a_cpu_process_as_it_was() -> None:
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.conv.fp32_precision)
    configure_cuda(torch.device("cpu"), fixed_shapes=True)
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.conv.fp32_precision) == before
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(RayddError, match="unknown precision"):
        autocast_dtype("fp16", torch.device("cpu"))
