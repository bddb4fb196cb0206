"""What a distill run logs to MLflow as params: the run flags the command was given (unset ones, ``None``, are
left out), the preset it resolved, once, as ``preset.*``, and stage 1's differences as ``static_preset.*``. The
preset override flags are not logged again beside ``preset.*``: ``raydd.preset_flags`` tags which ones were given."""

from __future__ import annotations

from typing import Any

from raydd.config import to_dict
from raydd.distill.borrow import Borrowed
from raydd.distill.presets import PRESET_FIELDS as DECLARED_PRESET_FIELDS
from raydd.distill.presets import Preset
from raydd.distill.settings import DistillConfig

PRESET_FIELDS = frozenset(field.name for field in DECLARED_PRESET_FIELDS)


def run_params(
    config: DistillConfig, preset: Preset, static_preset: Preset, static_method: str, borrowed: Borrowed | None
) -> dict[str, Any]:
    params: dict[str, Any] = {k: v for k, v in to_dict(config).items() if k not in PRESET_FIELDS and v is not None}
    params["preset"] = preset.to_dict()  # flattened to preset.<field>
    if config.preset_file is not None:
        params["preset_file"] = config.preset_file
    if borrowed is not None:
        params["preset"]["borrowed_from"] = borrowed.name
    if config.paradigm != "naive":
        params["stage1.method"] = static_method
        changed = {k: v for k, v in static_preset.to_dict().items() if v != getattr(preset, k)}
        params.update({f"static_preset.{k}": v for k, v in changed.items()})
    return params


def preset_flags(config: DistillConfig) -> str:
    """The preset fields the command line set (``--lr-hal 1e-3`` -> ``lr_hal``), comma-separated; ``none``."""
    return ",".join(sorted(config.overrides())) or "none"
