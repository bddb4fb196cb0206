"""``PresetOverrides``: one flag per :class:`~raydd.distill.presets.Preset` field, ``None`` meaning "the
preset's value". Its fields mirror Preset's, name for name and type for type (``X | None``); a test keeps
them in step."""

from __future__ import annotations

import dataclasses
from typing import Any

from raydd.config import PRESET as PRESET_GROUP
from raydd.config import check, option
from raydd.devices import PRECISIONS
from raydd.models.hallucinator import VARIANTS

PRESET = " (default: the preset's)"


def preset_option(default: None, help: str, *, choices: tuple[str, ...] | None = None) -> Any:
    """An override flag: in ``--help``'s preset group."""
    return option(default, help, choices=choices, group=PRESET_GROUP)


@dataclasses.dataclass(frozen=True)
class PresetOverrides:
    iterations: int | None = preset_option(None, "distillation iterations per stage" + PRESET)
    lr_img: float | None = preset_option(None, "naive: lr of the synthetic videos" + PRESET)
    lr_static: float | None = preset_option(None, "static-dynamic stage 1: lr of the still images" + PRESET)
    lr_dynamic: float | None = preset_option(None, "static-dynamic stage 2: lr of the dynamic memories" + PRESET)
    lr_hal: float | None = preset_option(None, "static-dynamic stage 2: lr of the hallucinator H" + PRESET)
    momentum: float | None = preset_option(None, "SGD momentum of the synthetic tensors" + PRESET)
    batch_real: int | None = preset_option(
        None, "DM: real clips per class per matching sample; FRePo: real clips per sample" + PRESET
    )
    batch_syn: int | None = preset_option(None, "MTT: synthetic instances per student step (default: all)" + PRESET)
    syn_steps: int | None = preset_option(None, "MTT: student steps on synthetic data per sample" + PRESET)
    expert_epochs: int | None = preset_option(None, "MTT: expert epochs between start and target parameters" + PRESET)
    max_start_epoch: int | None = preset_option(None, "MTT: start epochs are drawn from [0, this)" + PRESET)
    lr_teacher: float | None = preset_option(None, "MTT: the student's initial lr" + PRESET)
    learn_lr: bool | None = preset_option(None, "MTT: learn the student's lr" + PRESET)
    lr_lr: float | None = preset_option(None, "MTT: lr of the learned student lr" + PRESET)
    hallucinator: str | None = preset_option(
        None, "H: one Conv3D (conv) or Conv3D + ConvTranspose3d (convtranspose)" + PRESET, choices=VARIANTS
    )
    static_per_ipc: int | None = preset_option(None, "SPC = this x IPC still images per class" + PRESET)
    dynamic_per_ipc: int | None = preset_option(None, "DPC = this x IPC dynamic memories per class" + PRESET)
    dynamic_channels: int | None = preset_option(None, "channels of a dynamic memory" + PRESET)
    dynamic_frames: int | None = preset_option(None, "frames of a dynamic memory (default: the clip's)" + PRESET)
    dynamic_scale: int | None = preset_option(None, "dynamic memories are H/scale x W/scale pixels" + PRESET)
    init: str | None = preset_option(
        None,
        "naive and stage 1 start from random real clips/frames (real) or noise" + PRESET,
        choices=("real", "noise"),
    )
    pixel_range: str | None = preset_option(
        None,
        "naive and stage 1: data keeps the synthetic videos/images within real pixels' range (clamped "
        "after each step), free leaves them unbounded (the reference)" + PRESET,
        choices=("free", "data"),
    )
    hal_init: str | None = preset_option(
        None,
        "stage 2 starts H at random (the reference) or as the identity composition video = static + dynamic" + PRESET,
        choices=("random", "identity"),
    )
    dynamic_std: float | None = preset_option(
        None,
        "stage 2 initialises the dynamic memories as Gaussian noise of this std (the reference: 1)" + PRESET,
    )
    dynamic_init: str | None = preset_option(
        None,
        "stage 2 starts the dynamic memories as noise (the reference; see --dynamic-std) or as the motion "
        "of random real clips of their class (real)" + PRESET,
        choices=("noise", "real"),
    )
    match_features: str | None = preset_option(
        None,
        "DM: match the flattened feature map (map, the reference) or globally pooled features (pooled)" + PRESET,
        choices=("map", "pooled"),
    )
    network_width: int | None = preset_option(
        None, "width of the matching networks (ConvNet; MiniC3D w/2, w, w)" + PRESET
    )
    precision: str | None = preset_option(
        None,
        "DM's real embedding (and with bf16, MTT's student) in bfloat16 (bf16) or float32 (fp32); auto: DM's in bf16 "
        "where the hardware runs it natively, MTT in fp32" + PRESET,
        choices=PRECISIONS,
    )

    def overrides(self) -> dict[str, object]:
        """The fields given (not None), by name: what they override in the preset."""
        names = (f.name for f in dataclasses.fields(PresetOverrides))
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def check_overrides(self) -> None:
        positive = (
            "iterations",
            "batch_real",
            "batch_syn",
            "syn_steps",
            "expert_epochs",
            "max_start_epoch",
            "static_per_ipc",
            "dynamic_per_ipc",
            "dynamic_channels",
            "dynamic_frames",
            "dynamic_scale",
            "network_width",
        )
        for name in positive:
            check(getattr(self, name) is None or getattr(self, name) >= 1, name, "a positive integer")
        for name in ("lr_img", "lr_static", "lr_dynamic", "lr_hal", "lr_teacher", "lr_lr"):
            check(getattr(self, name) is None or getattr(self, name) > 0, name, "a positive number")
        check(self.momentum is None or 0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        check(self.dynamic_std is None or self.dynamic_std >= 0, "dynamic_std", "0 or a positive number")
