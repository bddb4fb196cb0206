"""Where one call's time goes, by kind of operator: torch.profiler's self time of every aten operator, grouped.

Self time (an operator's own time, without the operators it calls) adds up to the profiled time with nothing
counted twice. The groups are read from operator names, as oneDNN's CPU kernels report them:

* ``aten::mkldnn_convolution`` is a forward convolution;
* ``aten::convolution_backward`` computes a convolution's input and weight gradients;
* ``aten::_convolution``'s own time is a transposed convolution (the backward of a weight gradient, met in a
  double backward: MTT), the forward ones being handed on to ``mkldnn_convolution``;
* autograd's node names (``...Backward0``) and the profiler's own records are bookkeeping, not arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.profiler import ProfilerActivity, profile

GROUPS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("convolution forward", lambda name: name in {"aten::mkldnn_convolution", "aten::slow_conv3d_forward"}),
    ("convolution backward", lambda name: name == "aten::convolution_backward"),
    ("transposed convolution", lambda name: name == "aten::_convolution" or "conv_transpose" in name),
    ("matmul", lambda name: name in {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"}),
    ("normalisation", lambda name: name.startswith("aten::") and "norm" in name),
    ("pooling", lambda name: name.startswith("aten::") and "pool" in name),
    ("element-wise, copies and reductions", lambda name: name.startswith("aten::")),
)
OTHER = "autograd and other bookkeeping"


def group_of(name: str) -> str:
    return next((group for group, matches in GROUPS if matches(name)), OTHER)


def profile_call(call: Callable[[], Any], top: int = 12) -> dict[str, Any]:
    """Run ``call()`` once under the profiler: {"seconds": self time summed, "shares": {group: fraction},
    "top": the ``top`` operators with the most self time, as [name, group, fraction, calls]}."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        call()
    events = [(event.key, event.self_cpu_time_total / 1e6, event.count) for event in profiler.key_averages()]
    seconds = sum(own for _, own, _ in events)
    totals: dict[str, float] = {}
    for name, own, _ in events:
        totals[group_of(name)] = totals.get(group_of(name), 0.0) + own
    shares = {group: totals[group] / seconds for group in sorted(totals, key=totals.get, reverse=True)}
    ranked = sorted(events, key=lambda event: -event[1])[:top]
    return {
        "seconds": seconds,
        "shares": shares,
        "top": [[name, group_of(name), own / seconds, calls] for name, own, calls in ranked],
    }
