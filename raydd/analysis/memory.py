"""Memory of one distillation iteration, measured the same way on every device.

The paper reports GPU memory. A CPU has no peak-allocation counter, so raydd counts what the
synthetic frames cost: the bytes autograd keeps for the backward pass (every tensor saved by the
forward, each storage once) plus the synthetic tensors with their gradient and momentum buffer. On a
CUDA device the allocator's peak is reported as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

MIB = 2**20


class SavedBytes:
    """Bytes of the distinct storages autograd saves while the context is open (:meth:`counting`)."""

    def __init__(self) -> None:
        self.total = 0
        self._seen: set[int] = set()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._seen:
            self._seen.add(storage.data_ptr())
            self.total += storage.nbytes()
        return tensor

    @contextlib.contextmanager
    def counting(self, *, besides: Sequence[torch.Tensor] = ()) -> Iterator[SavedBytes]:
        """``besides``: tensors counted elsewhere (the synthetic set), left out when autograd saves them."""
        self.total, self._seen = 0, {t.untyped_storage().data_ptr() for t in besides}
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
            yield self


def cuda_peak_start(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_mib(device: torch.device) -> float | None:
    """The CUDA allocator's peak since :func:`cuda_peak_start`, or ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / MIB
