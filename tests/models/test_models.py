"""Every model on every registered dataset shape: output shapes, parameter counts, gradients."""

from __future__ import annotations

import pytest
import torch

from raydd.data.specs import get_spec
from raydd.errors import RayddError
from raydd.models import build_model, model_names
from raydd.models.registry import CLASSIFIERS

# (T, H, W, C) and class count of each registered dataset shape.
SHAPES = {
    "miniucf": ((16, 112, 112, 3), 50),
    "hmdb51": ((16, 112, 112, 3), 51),
    "k400": ((8, 64, 64, 3), 400),
    "ssv2": ((8, 64, 64, 3), 174),
    "builtin": ((8, 32, 32, 3), 10),
}


def test_shapes_cover_the_registry() -> None:
    for name, (shape, _) in SHAPES.items():
        assert get_spec(name).clip_shape == shape


def _input(model: str, shape: tuple[int, int, int, int], n: int = 2) -> torch.Tensor:
    t, h, w, c = shape
    return torch.randn(n, c, h, w) if model == "convnet" else torch.randn(n, c, t, h, w)


@pytest.mark.parametrize("dataset", sorted(SHAPES))
@pytest.mark.parametrize("model", CLASSIFIERS)
def test_classifiers_give_one_logit_per_class_and_train(model: str, dataset: str) -> None:
    shape, classes = SHAPES[dataset]
    network = build_model(model, num_classes=classes, clip_shape=shape)
    logits = network(_input(model, shape))
    assert logits.shape == (2, classes)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in network.parameters())


def test_minic3d_matches_the_reference_parameter_count() -> None:
    network = build_model("minic3d", num_classes=50, clip_shape=(16, 112, 112, 3))
    assert sum(p.numel() for p in network.parameters()) == 3_647_666  # official ConvNet3D, 50 classes


@pytest.mark.parametrize(
    ("model", "shape", "classes", "expected"),
    [
        ("minic3d", (8, 32, 32, 3), 10, 3_642_506),
        ("cnn_gru", (16, 112, 112, 3), 50, 4_929_906),  # 64 x 14 x 14 frame features into a 128-wide GRU
        ("cnn_lstm", (16, 112, 112, 3), 50, 6_552_178),
        ("cnn_gru", (8, 32, 32, 3), 10, 501_066),
        ("convnet", (8, 32, 32, 3), 10, 320_010),  # depth 3, width 128, 4x4x128 features
        ("convnet", (16, 112, 112, 3), 50, 1_553_970),
    ],
)
def test_parameter_counts(model: str, shape: tuple[int, int, int, int], classes: int, expected: int) -> None:
    assert sum(p.numel() for p in build_model(model, num_classes=classes, clip_shape=shape).parameters()) == expected


@pytest.mark.parametrize("dataset", sorted(SHAPES))
@pytest.mark.parametrize(("variant", "params"), [("conv", 327), ("convtranspose", 8 * 4 * 27 + 8 + 8 * 3 * 27 + 3)])
def test_hallucinator_upsamples_small_dynamic_memory(dataset: str, variant: str, params: int) -> None:
    (t, h, w, c), _ = SHAPES[dataset]
    hallucinator = build_model("hallucinator", clip_shape=(t, h, w, c), variant=variant)
    assert sum(p.numel() for p in hallucinator.parameters()) == params
    static = torch.randn(3, c, h, w, requires_grad=True)
    dynamic = torch.randn(3, 1, max(1, t // 4), h // 4, w // 4, requires_grad=True)  # fewer frames, lower resolution
    video = hallucinator(static, dynamic)
    assert video.shape == (3, c, t, h, w)
    video.square().mean().backward()
    assert static.grad.abs().sum() > 0 and dynamic.grad.abs().sum() > 0


def test_hallucinator_with_more_dynamic_channels_at_full_size() -> None:
    hallucinator = build_model("hallucinator", clip_shape=(8, 32, 32, 3), dynamic_channels=2)
    assert hallucinator(torch.randn(1, 3, 32, 32), torch.randn(1, 2, 8, 32, 32)).shape == (1, 3, 8, 32, 32)
    with pytest.raises(ValueError, match="2 static images but 3 dynamic"):
        hallucinator(torch.randn(2, 3, 32, 32), torch.randn(3, 2, 8, 32, 32))


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(RayddError, match="unknown model 'resnet'.*minic3d"):
        build_model("resnet", num_classes=2, clip_shape=(8, 32, 32, 3))
    assert set(CLASSIFIERS) | {"hallucinator"} == set(model_names())


def test_models_follow_their_inputs_device() -> None:
    """Device-agnostic: nothing inside a model pins a device (run on CPU here, GPU where there is one)."""
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    network = build_model("minic3d", num_classes=10, clip_shape=(8, 32, 32, 3)).to(device)
    assert network(_input("minic3d", (8, 32, 32, 3)).to(device)).device.type == device.type
