"""benchmarks/op_profile.py: a profiled call's time, grouped by kind of operator, adds up and names each kind."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.op_profile import OTHER, group_of, profile_call


def _double_backward() -> None:
    """Two convolutions, a weight gradient kept as a graph and differentiated again (MTT's pattern)."""
    x = torch.randn(2, 3, 4, 16, 16, requires_grad=True)
    first = torch.randn(8, 3, 3, 3, 3, requires_grad=True)
    second = torch.randn(4, 8, 3, 3, 3, requires_grad=True)
    loss = F.conv3d(F.relu(F.conv3d(x, first, padding=1)), second, padding=1).mean()
    grads = torch.autograd.grad(loss, [first, second], create_graph=True)
    sum(g.pow(2).sum() for g in grads).backward()


def test_every_convolution_kind_is_found_and_the_shares_add_up() -> None:
    result = profile_call(_double_backward)
    shares = result["shares"]
    assert result["seconds"] > 0
    assert abs(sum(shares.values()) - 1.0) < 1e-6
    for kind in ("convolution forward", "convolution backward", "transposed convolution"):
        assert shares.get(kind, 0.0) > 0, f"no {kind} found in {shares}"


def test_names_fall_into_their_groups() -> None:
    assert group_of("aten::mkldnn_convolution") == "convolution forward"
    assert group_of("aten::convolution_backward") == "convolution backward"
    assert group_of("aten::native_group_norm_backward") == "normalisation"
    assert group_of("aten::avg_pool3d_backward") == "pooling"
    assert group_of("aten::mul") == "element-wise, copies and reductions"
    assert group_of("ConvolutionBackward0") == OTHER
