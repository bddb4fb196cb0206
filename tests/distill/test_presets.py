"""The seed's preset tables as data: every row is a valid preset, table -> file -> flags precedence, and
the storage each full-size preset's synthetic set takes (counted by the real classes, on the meta
device, so a 400-class set allocates nothing)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path

import pytest
import torch

from raydd.data.specs import MINIUCF_CLASSES, get_spec
from raydd.distill.overrides import PresetOverrides
from raydd.distill.presets import TABLES, Preset, table_preset
from raydd.distill.settings import DistillConfig
from raydd.distill.stages import STATIC, StageSpec, dynamic_shape
from raydd.distill.synthetic import FreeTensors, StaticDynamic, full_video_values
from raydd.distilled_set import BYTES_PER_VALUE, write_distilled, write_static_dynamic
from raydd.errors import RayddError
from raydd.models.hallucinator import VARIANTS, Hallucinator

NUM_CLASSES = {"miniucf": 50, "hmdb51": 51, "k400": 400, "ssv2": 174}
FULL_SIZE = sorted(key for key in TABLES if key[2] != "builtin")


def _optional(hint: object) -> frozenset:
    """The types ``hint`` allows, ``None`` always among them: ``int`` and ``int | None`` give {int, None}."""
    parts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return frozenset(parts) | {type(None)}


def test_the_override_flags_mirror_the_preset_field_for_field() -> None:
    """One flag per Preset field, of the field's type (or None: the preset's value), in Preset's order."""
    presets, overrides = typing.get_type_hints(Preset), typing.get_type_hints(PresetOverrides)
    assert list(overrides) == [field.name for field in dataclasses.fields(Preset)]
    assert {name: _optional(hint) for name, hint in overrides.items()} == {
        name: _optional(hint) for name, hint in presets.items()
    }
    assert all(field.default is None for field in dataclasses.fields(PresetOverrides))
    assert issubclass(DistillConfig, PresetOverrides)
    given = DistillConfig(dataset="miniucf", method="dm", paradigm="naive", lr_img=7.0, learn_lr=False)
    assert given.overrides() == {"lr_img": 7.0, "learn_lr": False}


@pytest.mark.parametrize("key", sorted(TABLES), ids=lambda key: "-".join(map(str, key)))
def test_every_row_is_a_preset_the_command_line_accepts(key: tuple) -> None:
    method, paradigm, dataset, ipc = key
    preset = Preset(**TABLES[key])
    DistillConfig(
        dataset=dataset, method=method, paradigm=paradigm, ipc=ipc, **TABLES[key]
    )  # the flags' validation accepts every value
    assert (
        DistillConfig(dataset=dataset, method=method, paradigm=paradigm, ipc=ipc).resolved_preset()
        == preset
        == table_preset(*key)
    )
    needed = ("lr_img",) if paradigm == "naive" else ("lr_static", "lr_dynamic", "lr_hal")
    assert all(getattr(preset, name) > 0 for name in needed)
    assert preset.hallucinator in VARIANTS and preset.init in ("real", "noise")
    assert (preset.hallucinator == "convtranspose") == (key == ("dm", "static-dynamic", "miniucf", 1))


def test_the_tables_cover_the_seeds_datasets() -> None:
    assert {key[2] for key in TABLES} == set(NUM_CLASSES) | {"builtin"}
    assert {(m, d) for m, _, d, _ in FULL_SIZE if m == "frepo"} == {("frepo", "miniucf"), ("frepo", "hmdb51")}
    assert len(FULL_SIZE) == 2 * 2 * (4 + 4 + 2) and len(MINIUCF_CLASSES) == NUM_CLASSES["miniucf"]
    assert table_preset("mtt", "naive", "ucf101", 5) == table_preset(
        "mtt", "naive", "miniucf", 5
    )  # UCF101 borrows MiniUCF's row


def test_a_combination_without_a_row_asks_for_its_lrs() -> None:
    with pytest.raises(RayddError, match=r"no preset for frepo static-dynamic on k400 at IPC 1.*--lr-dynamic LR"):
        DistillConfig(dataset="k400", method="frepo", paradigm="static-dynamic", ipc=1).resolved_preset()
    with pytest.raises(RayddError, match=r"pass --lr-img LR or --preset FILE"):
        DistillConfig(dataset="ssv2", method="frepo", paradigm="naive", ipc=5).resolved_preset()
    given = DistillConfig(dataset="k400", method="frepo", paradigm="naive", ipc=1, lr_img=0.5).resolved_preset()
    assert given.lr_img == 0.5 and given == Preset(lr_img=0.5)  # everything else: the Preset defaults


def test_flags_override_a_preset_file_which_overrides_the_table(tmp_path: Path) -> None:
    base = dict(dataset="miniucf", method="dm", paradigm="naive", ipc=5)
    table = table_preset("dm", "naive", "miniucf", 5)
    flagged = DistillConfig(**base, lr_img=7.0).resolved_preset()
    assert flagged.lr_img == 7.0 and flagged.batch_real == table.batch_real == 64
    (tmp_path / "tuned.json").write_text(
        json.dumps({"preset": {"lr_img": 5.0, "batch_real": 3}, "score": 41.0})
    )  # as python -m raydd.tune writes it
    (tmp_path / "plain.json").write_text(json.dumps({"lr_img": 5.0, "batch_real": 3}))
    for name in ("tuned.json", "plain.json"):
        from_file = DistillConfig(**base, preset=str(tmp_path / name)).resolved_preset()
        assert (from_file.lr_img, from_file.batch_real, from_file.iterations) == (5.0, 3, table.iterations)
        both = DistillConfig(**base, preset=str(tmp_path / name), lr_img=7.0).resolved_preset()
        assert (both.lr_img, both.batch_real) == (7.0, 3)


def test_an_unknown_field_in_a_preset_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "typo.json").write_text(json.dumps({"lr_imgg": 5.0}))
    config = DistillConfig(dataset="miniucf", method="dm", paradigm="naive", ipc=1, preset=str(tmp_path / "typo.json"))
    with pytest.raises(
        RayddError, match=r"preset file .*typo.json has unknown fields lr_imgg: known fields are "
    ) as error:
        config.resolved_preset()
    assert "\n" not in str(error.value)


def _stored_values(key: tuple) -> tuple[int, int]:
    """(values the stage's synthetic set stores, values of IPC full videos per class) for a full-size row."""
    method, paradigm, dataset, ipc = key
    preset, classes, (t, h, w, c) = table_preset(*key), NUM_CLASSES[dataset], get_spec(dataset).clip_shape
    spec = StageSpec(stage=STATIC, method=method, dataset_uri=f"store/datasets/{dataset}", ipc=ipc, preset=preset)
    with torch.device("meta"):
        if paradigm == "naive":
            synthetic = FreeTensors(classes, ipc, (c, t, h, w))
        else:
            hallucinator = Hallucinator(
                frames=t, channels=c, dynamic_channels=preset.dynamic_channels, variant=preset.hallucinator
            )
            static = torch.empty(classes * spec.per_class, c, h, w)
            synthetic = StaticDynamic(
                static,
                num_classes=classes,
                dpc=spec.dpc,
                dynamic_shape=dynamic_shape(spec, (t, h, w, c)),
                hallucinator=hallucinator,
            )
    return synthetic.stored_values(), full_video_values(classes, ipc, (t, h, w, c))


@pytest.mark.parametrize("key", FULL_SIZE, ids=lambda key: "-".join(map(str, key)))
def test_static_dynamic_sets_store_less_than_the_videos_they_replace(key: tuple) -> None:
    stored, full = _stored_values(key)
    if key[1] == "naive":
        assert stored == full
    else:  # the paper: 0.79-0.92x of IPC full videos (16-frame clips at the low end, 8-frame at the high end)
        assert 0.75 <= stored / full <= 0.95 and stored < full


def test_the_artifact_records_the_storage_the_synthetic_set_counts(tmp_path: Path) -> None:
    classes, generator = tuple(f"class{c}" for c in range(3)), torch.Generator().manual_seed(0)
    hallucinator = Hallucinator(frames=4, variant="conv")
    synthetic = StaticDynamic(
        torch.randn(6, 3, 8, 8, generator=generator),
        num_classes=3,
        dpc=2,
        dynamic_shape=(1, 4, 8, 8),
        hallucinator=hallucinator,
        initial_dynamic=torch.randn(6, 1, 4, 8, 8, generator=generator),
    )
    manifest = write_static_dynamic(
        str(tmp_path / "sd"),
        static_NCHW=synthetic.static,
        dynamic_NCTHW=synthetic.dynamic,
        hallucinator=hallucinator,
        variant="conv",
        classes=classes,
        frames=4,
        dataset_uri="builtin",
        method="dm-static-dynamic",
        ipc=1,
    )
    values = 6 * 3 * 8 * 8 + 6 * 4 * 8 * 8 + 327  # static + dynamic + H (Conv3d 4 -> 3, 3x3x3, with bias)
    assert synthetic.stored_values() == values and manifest.metadata["storage_bytes"] == values * BYTES_PER_VALUE
    assert manifest.metadata["storage_ratio"] == pytest.approx(values / full_video_values(3, 1, (4, 8, 8, 3)))
    assert manifest.metadata["storage_bytes"] <= sum(
        shard.bytes for shard in manifest.shards
    )  # the files hold at least those values

    videos = FreeTensors(3, 2, (3, 4, 8, 8), initial=torch.randn(6, 3, 4, 8, 8, generator=generator))
    manifest = write_distilled(
        str(tmp_path / "videos"),
        videos.render(),
        videos.labels,
        classes=classes,
        dataset_uri="builtin",
        method="dm-naive",
        ipc=2,
    )
    assert (
        manifest.metadata["storage_bytes"]
        == videos.stored_values() * BYTES_PER_VALUE
        == 6 * 3 * 4 * 8 * 8 * BYTES_PER_VALUE
    )
    assert manifest.metadata["storage_ratio"] == 1.0
