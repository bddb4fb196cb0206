"""Stage 1 returns images, not noise: with the built-in preset the still images stay within the pixel range
of real frames, and it is the bound (``pixel_range data``) that holds them there at a large lr."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from raydd.data.reader import open_prepared
from raydd.distill.loop import SingleProcess
from raydd.distill.presets import table_preset
from raydd.distill.stages import STATIC, StageSpec, build_stage

from .tiny_store import write_builtin

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dataset_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_builtin(str(tmp_path_factory.mktemp("store")))


def _stills(dataset_uri: str, iterations: int, **preset_fields: object) -> torch.Tensor:
    preset = dataclasses.replace(
        table_preset("dm", "static-dynamic", "builtin", 1), iterations=iterations, **preset_fields
    )
    distiller = build_stage(
        StageSpec(stage=STATIC, method="dm", dataset_uri=dataset_uri, ipc=1, preset=preset), SingleProcess(), CPU
    )
    for iteration in range(iterations):
        distiller.step(iteration)
    return distiller.synthetic.values.detach()


def _pixel_range(dataset_uri: str) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = open_prepared(dataset_uri)
    mean, std = torch.tensor(dataset.mean), torch.tensor(dataset.std)
    return (-mean / std).view(1, 3, 1, 1), ((1 - mean) / std).view(1, 3, 1, 1)


def test_builtin_stage_one_keeps_the_stills_within_real_pixels(dataset_uri: str) -> None:
    low, high = _pixel_range(dataset_uri)
    stills = _stills(dataset_uri, 20)
    assert bool(((stills >= low - 1e-4) & (stills <= high + 1e-4)).all())
    assert 0.3 < float(stills.std()) < 2.0  # real frames have std ~1 in these units: images, not noise or a flat grey


def test_without_the_bound_a_large_lr_leaves_the_range_and_with_it_does_not(dataset_uri: str) -> None:
    low, high = _pixel_range(dataset_uri)
    free = _stills(dataset_uri, 5, lr_static=1e4, pixel_range="free")
    bounded = _stills(dataset_uri, 5, lr_static=1e4, pixel_range="data")
    assert float((free - free.clamp(min=low, max=high)).abs().max()) > 1.0  # the test can fail: noise leaves the range
    assert bool(((bounded >= low - 1e-4) & (bounded <= high + 1e-4)).all())
