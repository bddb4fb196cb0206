"""bf16 autocast of DM's real embedding (``--precision``): the embeddings and the distillation gradient
agree with float32 within measured bounds, and ``auto`` follows the hardware."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from raydd.devices import autocast_dtype, fast_bf16
from raydd.distill.loop import SingleProcess
from raydd.distill.presets import Preset
from raydd.distill.stages import StageSpec, build_stage
from raydd.errors import RayddError
from raydd.models.minic3d import MiniC3D

from .tiny_store import write_builtin

CPU = torch.device("cpu")
# Measured on these inputs (torch 2.14.1, AVX-512 BF16 CPU; pytest -s prints them): relative error of the
# feature map 0.34%, of the class means 0.22%; the synthetic set's update: cosine 0.99998 (naive) and
# 0.999999 (stage 2), relative error 0.7% and 0.2%. The bounds leave at least 5x.
EMBEDDING_RELATIVE_ERROR = 0.02
UPDATE_COSINE = 0.995


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def test_bf16_feature_map_matches_fp32() -> None:
    torch.manual_seed(0)
    net = MiniC3D(num_classes=10, frames=8, height=32, width=32, widths=(64, 128, 128)).requires_grad_(False)
    clips = torch.randn(16, 3, 8, 32, 32)
    fp32 = net.feature_map(clips)
    bf16 = copy.deepcopy(net).to(torch.bfloat16).feature_map(clips.to(torch.bfloat16))  # what DM runs
    assert bf16.dtype == torch.bfloat16
    print(f"relative error of the feature map {_relative_error(fp32, bf16.float()):.2e}")
    assert _relative_error(fp32, bf16.float()) < EMBEDDING_RELATIVE_ERROR
    means = fp32.view(4, 4, -1).mean(1), bf16.float().view(4, 4, -1).mean(1)
    print(f"relative error of the class means {_relative_error(*means):.2e}")
    assert _relative_error(*means) < EMBEDDING_RELATIVE_ERROR


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(write_builtin(str(tmp_path_factory.mktemp("store"))))


@pytest.mark.parametrize("stage", ["naive", "dynamic"])
def test_bf16_real_embedding_keeps_dm_update_direction(dataset: Path, stage: str, tmp_path: Path) -> None:
    static = None
    if stage == "dynamic":
        from raydd.distill.artifact import write_static

        static = str(tmp_path / "static")
        images = torch.randn(20, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        write_static(static, images, torch.arange(10).repeat_interleave(2), {"method": "dm"})
    preset = Preset(iterations=1, lr_img=1.0, lr_dynamic=1.0, lr_hal=1.0, momentum=0.0, batch_real=8, network_width=64)

    def update(precision: str) -> torch.Tensor:
        spec = StageSpec(
            stage=stage,
            method="dm",
            dataset_uri=str(dataset),
            ipc=1,
            preset=dataclasses.replace(preset, precision=precision),
            seed=3,
            static_uri=static,
        )
        distiller = build_stage(spec, SingleProcess(), CPU)
        before = [p.detach().clone() for p in distiller.learnables]
        distiller.step(0)
        return torch.cat([(p.detach() - b).flatten() for p, b in zip(distiller.learnables, before, strict=True)])

    fp32, bf16 = update("fp32"), update("bf16")
    assert not torch.equal(fp32, bf16)  # the bf16 path really ran
    cosine = float(torch.nn.functional.cosine_similarity(fp32, bf16, dim=0))
    print(f"{stage}: cosine {cosine:.6f}, relative error {_relative_error(fp32, bf16):.2e}")
    assert cosine > UPDATE_COSINE, cosine
    assert _relative_error(fp32, bf16) < 0.1


def test_auto_precision_follows_the_hardware() -> None:
    assert autocast_dtype("fp32", CPU) is None
    assert autocast_dtype("bf16", CPU) == torch.bfloat16
    assert autocast_dtype("auto", CPU) == (torch.bfloat16 if fast_bf16(CPU) else None)
    with pytest.raises(RayddError, match="precision"):
        autocast_dtype("fp16", CPU)


def test_a_bf16_run_has_its_own_checkpoints_and_output(dataset: Path) -> None:
    """bf16 computes other values than fp32: it must not resume or reuse an fp32 run (the device, which does not
    change what is computed, still shares them; so does a precision the method does not compute in)."""
    from raydd.distill.driver import _stage_key

    preset = Preset(iterations=2, lr_img=1.0, momentum=0.0, batch_real=4, network_width=8)

    def key(precision: str, device: str = "auto", method: str = "dm") -> str:
        spec = StageSpec(
            stage="naive",
            method=method,
            dataset_uri=str(dataset),
            ipc=1,
            preset=dataclasses.replace(preset, precision=precision),
            seed=0,
            device=device,
        )
        return _stage_key(spec)

    assert len({key("fp32"), key("bf16"), key("auto")}) == 3
    assert key("fp32", "cpu") == key("fp32", "cuda")
    # MTT computes in bf16 only when asked; FRePo never: the other values keep the fp32 run's name
    assert key("auto", method="mtt") == key("fp32", method="mtt") != key("bf16", method="mtt")
    assert key("bf16", method="frepo") == key("fp32", method="frepo")


def test_the_default_precision_is_auto_bf16_for_dm_where_native_and_fp32_for_mtt() -> None:
    from raydd.distill.methods.catalog import low_precision_of

    (default,) = (field.default for field in dataclasses.fields(Preset) if field.name == "precision")
    assert default == "auto"
    assert low_precision_of("dm", default, CPU) == (torch.bfloat16 if fast_bf16(CPU) else None)
    assert low_precision_of("mtt", default, CPU) is None  # bf16 MTT only when asked
