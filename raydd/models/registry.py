"""Build a network by name. Factories are keyword-only; defaults are the paper's choices.

``clip_shape`` is (T, H, W, C) of the data (the prepared dataset's clip shape): video models use all
of it, the image ConvNet uses (H, W, C) of single frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from raydd.errors import RayddError
from raydd.models.convnet import ConvNet
from raydd.models.hallucinator import Hallucinator
from raydd.models.minic3d import MiniC3D
from raydd.models.recurrent import RecurrentVideoNet


def convnet(
    *, num_classes: int, clip_shape: tuple[int, int, int, int], depth: int = 3, net_width: int = 128
) -> nn.Module:
    _, h, w, c = clip_shape
    return ConvNet(num_classes=num_classes, channels=c, height=h, width=w, depth=depth, net_width=net_width)


def minic3d(
    *,
    num_classes: int,
    clip_shape: tuple[int, int, int, int],
    widths: tuple[int, ...] = (64, 128, 128),
    head: str = "average",
) -> nn.Module:
    """MiniC3D; ``head``: "average" (raydd's) or "dropout-max" (the reference evaluation's), see :class:`MiniC3D`."""
    t, h, w, c = clip_shape
    return MiniC3D(num_classes=num_classes, channels=c, frames=t, height=h, width=w, widths=tuple(widths), head=head)


def cnn_gru(
    *,
    num_classes: int,
    clip_shape: tuple[int, int, int, int],
    widths: tuple[int, ...] = (32, 64, 64),
    hidden: int = 128,
) -> nn.Module:
    _, h, w, c = clip_shape
    return RecurrentVideoNet(
        num_classes=num_classes, cell="gru", channels=c, height=h, width=w, widths=tuple(widths), hidden=hidden
    )


def cnn_lstm(
    *,
    num_classes: int,
    clip_shape: tuple[int, int, int, int],
    widths: tuple[int, ...] = (32, 64, 64),
    hidden: int = 128,
) -> nn.Module:
    _, h, w, c = clip_shape
    return RecurrentVideoNet(
        num_classes=num_classes, cell="lstm", channels=c, height=h, width=w, widths=tuple(widths), hidden=hidden
    )


def hallucinator(
    *, clip_shape: tuple[int, int, int, int], dynamic_channels: int = 1, variant: str = "conv"
) -> nn.Module:
    t, _, _, c = clip_shape
    return Hallucinator(frames=t, channels=c, dynamic_channels=dynamic_channels, variant=variant)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "convnet": convnet,
    "minic3d": minic3d,
    "cnn_gru": cnn_gru,
    "cnn_lstm": cnn_lstm,
    "hallucinator": hallucinator,
}
IMAGE_MODELS = frozenset({"convnet"})
CLASSIFIERS = ("minic3d", "cnn_gru", "cnn_lstm", "convnet")


def model_names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """``build_model("minic3d", num_classes=50, clip_shape=(16, 112, 112, 3))``."""
    if name not in _FACTORIES:
        raise RayddError(f"unknown model {name!r}: use one of {', '.join(_FACTORIES)}")
    return _FACTORIES[name](**kwargs)
