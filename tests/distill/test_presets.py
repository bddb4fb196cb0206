"""The seed's preset tables as data: every row is a valid preset, table -> file -> flags precedence, and
the storage each full-size preset's synthetic set takes (counted by the real classes, on the meta
device, so a 400-class set allocates nothing)."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest
import torch

from raydd.data.specs import MINIUCF_CLASSES, get_spec
from raydd.distill.driver import _stage_key
from raydd.distill.presets import (
    PRESET_FIELDS,
    STAGE1_METHOD_FIELDS,
    STAGES,
    TABLES,
    UNREAD_BY_STAGE1,
    Preset,
    table_preset,
)
from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import resolve_presets
from raydd.distill.stages import STATIC, StageSpec, dynamic_shape
from raydd.distill.synthetic import FreeTensors, StaticDynamic, full_video_values
from raydd.distilled_set import BYTES_PER_VALUE, write_distilled, write_static_dynamic
from raydd.errors import ConfigError, RayddError
from raydd.models.hallucinator import VARIANTS, Hallucinator

NUM_CLASSES = {"miniucf": 50, "hmdb51": 51, "k400": 400, "ssv2": 174}
FULL_SIZE = sorted(key for key in TABLES if key[2] != "builtin")


def test_every_preset_field_is_one_flag_derived_from_its_declaration() -> None:
    """A Preset field is declared once (default, help, stage, bounds); its distill flag takes the field's type or
    None (the preset's value) and the declared help and choices."""
    hints = typing.get_type_hints(DistillConfig)
    flags = {field.name: field for field in dataclasses.fields(DistillConfig)}
    for field in PRESET_FIELDS:
        assert field.metadata["stage"] in STAGES, field.name
        flag = flags[field.name]
        assert flag.default is None and hints[field.name] == typing.get_type_hints(Preset)[field.name] | None
        assert flag.metadata["help"] == field.metadata["help"] + " (default: the preset's)"
        assert flag.metadata["choices"] == field.metadata["choices"]
    given = DistillConfig(dataset="miniucf", method="dm", paradigm="naive", lr_img=7.0, learn_lr=False)
    assert given.overrides() == {"lr_img": 7.0, "learn_lr": False}


def test_a_flag_outside_its_declared_bound_is_refused() -> None:
    for field in PRESET_FIELDS:
        bound = field.metadata["bound"]
        if bound is not None:
            with pytest.raises(
                ConfigError, match=f"--{field.name.replace('_', '-')}: expected {re.escape(bound.allowed)}"
            ):
                DistillConfig(**{field.name: -1})


def _stage1_key(**flags: object) -> str:
    presets = resolve_presets(DistillConfig(method="frepo", static_method="dc", **flags))
    spec = StageSpec(stage=STATIC, method="dc", dataset_uri="builtin", ipc=1, preset=presets.stage1)
    return _stage_key(spec, UNREAD_BY_STAGE1)


def test_the_stage_sets_derive_from_each_fields_stage() -> None:
    """Stage 1's still images stay reusable when a field only stage 2 (or naive) reads changes, and not when one
    that stage 1 reads does; stage 1 run by another method takes that method's row for its method's fields."""
    declared = {field.name: field.metadata for field in PRESET_FIELDS}
    assert set(UNREAD_BY_STAGE1) == {name for name, meta in declared.items() if meta["stage"] in ("2", "naive")}
    assert {"lr_dynamic", "lr_hal", "hallucinator", "lr_img"} <= set(UNREAD_BY_STAGE1)
    assert not set(STAGE1_METHOD_FIELDS) & set(UNREAD_BY_STAGE1) and "lr_static" in STAGE1_METHOD_FIELDS
    base = _stage1_key()
    assert all(_stage1_key(**{name: 0.123}) == base for name in ("lr_dynamic", "lr_hal", "lr_img", "dynamic_std"))
    assert all(_stage1_key(**{name: 3}) != base for name in ("iterations", "network_width", "batch_real"))
    config = DistillConfig(method="frepo", static_method="dc")
    stage1 = resolve_presets(config).stage1
    dc, frepo = (
        table_preset("dc", "static-dynamic", "builtin", 1),
        table_preset("frepo", "static-dynamic", "builtin", 1),
    )
    assert all(getattr(stage1, name) == getattr(dc, name) for name in STAGE1_METHOD_FIELDS)
    assert all(
        getattr(stage1, field.name) == getattr(frepo, field.name)
        for field in PRESET_FIELDS
        if field.name not in STAGE1_METHOD_FIELDS
    )


@pytest.mark.parametrize("key", sorted(TABLES), ids=lambda key: "-".join(map(str, key)))
def test_every_row_is_a_preset_the_command_line_accepts(key: tuple) -> None:
    method, paradigm, dataset, ipc = key
    preset = Preset(**TABLES[key])
    DistillConfig(
        dataset=dataset, method=method, paradigm=paradigm, ipc=ipc, **TABLES[key]
    )  # the flags' validation accepts every value
    assert (
        resolve_presets(DistillConfig(dataset=dataset, method=method, paradigm=paradigm, ipc=ipc)).run
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
        resolve_presets(DistillConfig(dataset="k400", method="frepo", paradigm="static-dynamic", ipc=1))
    with pytest.raises(RayddError, match=r"pass --lr-img LR or --preset-file FILE"):
        resolve_presets(DistillConfig(dataset="ssv2", method="frepo", paradigm="naive", ipc=5))
    given = resolve_presets(DistillConfig(dataset="k400", method="frepo", paradigm="naive", ipc=1, lr_img=0.5)).run
    assert given.lr_img == 0.5 and given == Preset(lr_img=0.5)  # everything else: the Preset defaults


def test_flags_override_a_preset_file_which_overrides_the_table(tmp_path: Path) -> None:
    base = dict(dataset="miniucf", method="dm", paradigm="naive", ipc=5)
    table = table_preset("dm", "naive", "miniucf", 5)
    flagged = resolve_presets(DistillConfig(**base, lr_img=7.0)).run
    assert flagged.lr_img == 7.0 and flagged.batch_real == table.batch_real == 64
    (tmp_path / "tuned.json").write_text(
        json.dumps({"preset": {"lr_img": 5.0, "batch_real": 3}, "score": 41.0})
    )  # as python -m raydd.tune writes it
    (tmp_path / "plain.json").write_text(json.dumps({"lr_img": 5.0, "batch_real": 3}))
    for name in ("tuned.json", "plain.json"):
        from_file = resolve_presets(DistillConfig(**base, preset_file=str(tmp_path / name))).run
        assert (from_file.lr_img, from_file.batch_real, from_file.iterations) == (5.0, 3, table.iterations)
        both = resolve_presets(DistillConfig(**base, preset_file=str(tmp_path / name), lr_img=7.0)).run
        assert (both.lr_img, both.batch_real) == (7.0, 3)


def test_an_unknown_field_in_a_preset_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "typo.json").write_text(json.dumps({"lr_imgg": 5.0}))
    config = DistillConfig(
        dataset="miniucf", method="dm", paradigm="naive", ipc=1, preset_file=str(tmp_path / "typo.json")
    )
    with pytest.raises(
        RayddError, match=r"preset file .*typo.json has unknown fields lr_imgg: known fields are "
    ) as error:
        resolve_presets(config)
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
