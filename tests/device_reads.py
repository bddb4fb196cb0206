"""Counting host reads of device data on the CPU, so that a test without a GPU can hold code to "no sync here".

On CUDA a host read of a tensor's values (``.item()``, ``bool(t)``, ``.tolist()``, a boolean-mask index, ``nonzero``,
``unique``, ``torch.linalg.solve``'s error check, ...) waits for every kernel queued before it: the GPU idles while
the host catches up. On the CPU the same code runs without waiting, so nothing shows it. :class:`DeviceReads` makes
it visible: it follows which tensors would live on the accelerator (those moved with ``.to(device)``, made with an
explicit ``device=``, and everything computed from them, gradients included) and records every read of their
values, at the Python level (``item``, ``tolist``, ...) and at the ATen level inside any call on them (the ops that
synchronise on CUDA). Tensors that stay on the host on a GPU run too (draws from a CPU ``torch.Generator``, row
numbers, labels before ``.to(device)``) are not followed, so reading them is free, as it is on a GPU.

Two modes work together: a :class:`~torch.overrides.TorchFunctionMode` follows tensors from call to call (it sees
Python-level calls, ``Tensor.grad`` included), and a :class:`~torch.utils._python_dispatch.TorchDispatchMode`
counts the synchronising ATen ops run inside a call on followed tensors, the backward pass's included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten

# Python-level calls that copy a tensor's values to the host.
HOST_READS = frozenset({"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"})

# ATen ops that read values on the host on CUDA: a scalar, an output size that depends on the values, an error flag.
SYNCING_OPS = frozenset(
    {
        aten._local_scalar_dense.default,
        aten.is_nonzero.default,
        aten.equal.default,
        aten.nonzero.default,
        aten.argwhere.default,
        aten.masked_select.default,
        aten._unique.default,
        aten._unique2.default,
        aten.unique_dim.default,
        aten.unique_consecutive.default,
        aten.unique_dim_consecutive.default,
        aten.bincount.default,
        aten._linalg_check_errors.default,
    }
)


def _boolean_index(func: Any, args: tuple) -> bool:  # noqa: ANN401
    """``t[mask]`` and ``t[mask] = v``: the mask's true count decides the shape, so CUDA reads it (nonzero)."""
    if func not in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default):
        return False
    indices = args[1] if len(args) > 1 else ()
    return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)


def _repeat_without_size(func: Any, kwargs: dict) -> bool:  # noqa: ANN401
    return func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None


class _SyncingOps(TorchDispatchMode):
    def __init__(self, record: Callable[[str], None]) -> None:
        super().__init__()
        self.record = record
        self.counting = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if self.counting and (func in SYNCING_OPS or _boolean_index(func, args) or _repeat_without_size(func, kwargs)):
            self.record(str(func))
        return func(*args, **kwargs)


def _tensors(tree: object) -> list[torch.Tensor]:
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


def _name(func: Any) -> str:  # noqa: ANN401
    return getattr(func, "__name__", None) or str(func)


def _to_host(args: tuple, kwargs: dict) -> bool:
    """raydd names the compute device with a ``torch.device`` and the host with the string ``"cpu"`` (a checkpoint,
    an artifact): ``.to("cpu")`` is a copy to the host, ``device="cpu"`` (Adam's step count) stays there."""
    return "cpu" in args[1:] or kwargs.get("device") == "cpu"


def _moves_to_device(func: Any, name: str, args: tuple, kwargs: dict) -> bool:  # noqa: ANN401
    """Whether the call puts its result on "the device": ``.to(device)``, ``.cuda()``, or a factory's ``device=``."""
    if _to_host(args, kwargs):
        return False
    if name == "to" and args and isinstance(args[0], torch.Tensor):
        device = torch._C._nn._parse_to(*args[1:], **kwargs)[0]
        return device is not None
    return name == "cuda" or kwargs.get("device") is not None


def _blocking_upload(name: str, args: tuple, kwargs: dict) -> bool:
    """A copy of host data to the device that the host waits for: on CUDA a copy without ``non_blocking`` ends
    with a synchronisation of the stream (the host waits for every kernel queued before it, then the copy).
    ``torch.tensor(data, device=...)`` is such a copy; ``.to(device, non_blocking=True)`` is not (from pinned
    memory, :func:`raydd.devices.to_device`, it is asynchronous)."""
    if _to_host(args, kwargs):
        return False
    if name == "to" and args and isinstance(args[0], torch.Tensor):
        device, _, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
        return device is not None and not non_blocking
    return name in ("tensor", "as_tensor") and isinstance(kwargs.get("device"), torch.device)


def _copy_as_on_a_gpu(tensor: torch.Tensor, to_host: bool) -> torch.Tensor:
    """On the CPU ``.to(device)`` and ``.cpu()`` return the tensor itself; on a GPU they return another tensor, and
    the host's stays the host's. A host copy is a copy here too, and a tensor sent "to the device" an alias, so
    that following one does not follow the other (a parameter is followed itself: modules move them in place)."""
    if to_host:
        return tensor.clone()
    if isinstance(tensor, torch.nn.Parameter) or tensor.requires_grad:
        return tensor
    return tensor.view_as(tensor)


class _Follow(TorchFunctionMode):
    def __init__(self, reads: DeviceReads) -> None:
        super().__init__()
        self.reads = reads

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        name = _name(func)
        followed = self.reads.followed
        on_device = any(t in followed for t in _tensors((args, kwargs)))
        read = on_device and (name in HOST_READS or (name == "to" and _to_host(args, kwargs)))
        syncing = self.reads.syncing_ops
        was, syncing.counting = syncing.counting, on_device and not read and self.reads.active
        try:
            out = func(*args, **kwargs)
        finally:
            syncing.counting = was
        if read and self.reads.active:
            self.reads.record(name)
        elif not on_device and self.reads.active and _blocking_upload(name, args, kwargs):
            self.reads.record(f"blocking {name} to the device")
        if args and out is args[0] and name in ("to", "cpu", "cuda"):
            out = _copy_as_on_a_gpu(out, read)
        if not read and (on_device or _moves_to_device(func, name, args, kwargs)):
            for tensor in _tensors(out):
                followed[tensor] = True
            if on_device and (name.endswith("_") or name in ("__setitem__", "__iadd__")) and args:
                followed[args[0]] = True
        return out


class DeviceReads:
    """``with DeviceReads() as reads:`` ... ``reads.reads``: every host read of device data, in order.

    Tensors are followed from the moment the block starts: build what the test runs inside it, and call
    :meth:`clear` (or use :meth:`counting`) around the part that is measured."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.followed: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.syncing_ops = _SyncingOps(self.record)
        self.active = True
        self._stack = contextlib.ExitStack()

    def record(self, what: str) -> None:
        self.reads.append(what)

    def clear(self) -> None:
        self.reads.clear()

    def follow(self, *tensors: torch.Tensor) -> None:
        """Treat ``tensors`` as device tensors (made before the block started)."""
        for tensor in tensors:
            self.followed[tensor] = True

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[str]]:
        """Only the reads made inside this block (the block's list; ``reads`` keeps them too)."""
        start = len(self.reads)
        mark: list[str] = []
        try:
            yield mark
        finally:
            mark.extend(self.reads[start:])

    def __enter__(self) -> DeviceReads:
        self._stack.enter_context(self.syncing_ops)
        self._stack.enter_context(_Follow(self))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
