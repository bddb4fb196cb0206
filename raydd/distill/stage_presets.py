"""The presets a :class:`~raydd.distill.settings.DistillConfig` runs with: the table's row (or the row a
dataset without rows borrows) -> stage 1's method's row for its STAGE1_FIELDS -> ``--preset FILE`` -> flags."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raydd.distill.borrow import Borrowed, borrows, nearest_row
from raydd.distill.presets import Preset, load_preset_file, table_preset
from raydd.errors import RayddError
from raydd.layout import StoreLayout
from raydd.storage import read_bytes, resolve

if TYPE_CHECKING:
    from raydd.distill.settings import DistillConfig

# Stage 1's method when --static-method is not given, wherever the tables give it settings for the dataset; None: the
# base method everywhere. The reference learns every stage 1 with DC, but on builtin (5 seeds, test split, a frame-only
# ConvNet trained on the 20 stills) DM's stills score 54.7 ± 1.6 top-1 (static classes 91.2), clamped to the pixel
# range 55.6 ± 2.1, and DC's 51.7 ± 2.5 (85.0), at 2.5x DM's time an iteration: benchmarks/stills.py, issue 12.
DEFAULT_STATIC_METHOD: str | None = None
# What stage 1 takes from its own method's row when that method is not the base method's.
STAGE1_FIELDS = (
    "lr_static",
    "momentum",
    "batch_real",
    "batch_syn",
    "syn_steps",
    "expert_epochs",
    "max_start_epoch",
    "lr_teacher",
    "learn_lr",
    "lr_lr",
)
STATIC_DYNAMIC = "static-dynamic"


def stage1_method(config: DistillConfig) -> str:
    """The method that learns stage 1's still images."""
    if config.static_method is not None:
        return config.static_method
    default = DEFAULT_STATIC_METHOD
    if default is None:
        return config.method
    if borrows(config.dataset) or table_preset(default, STATIC_DYNAMIC, config.dataset, config.ipc) is not None:
        return default
    return config.method


def borrowed(config: DistillConfig, method: str | None = None, paradigm: str | None = None) -> Borrowed | None:
    """The nearest table row a dataset without rows (a folder of videos) borrows; None for any other."""
    method, paradigm = method or config.method, paradigm or config.paradigm
    if not borrows(config.dataset) or table_preset(method, paradigm, config.dataset, config.ipc) is not None:
        return None
    from raydd.data.reader import open_prepared

    dataset = open_prepared(StoreLayout.of(config.store).dataset(config.dataset).uri)
    clip_shape = tuple(dataset.manifest.metadata["clip_shape"])
    return nearest_row(method, paradigm, config.ipc, clip_shape, len(dataset.classes))


def _table_fields(config: DistillConfig, method: str, paradigm: str) -> dict[str, Any] | None:
    table = table_preset(method, paradigm, config.dataset, config.ipc)
    if table is not None:
        return table.to_dict()
    row = borrowed(config, method, paradigm)
    return None if row is None else Preset(**row.fields).to_dict()


def presets(config: DistillConfig) -> tuple[Preset, Preset]:
    """(the run's preset, stage 1's)."""
    table = _table_fields(config, config.method, config.paradigm)
    fields = dict(table or {})
    stage1 = dict(fields)
    static_method = stage1_method(config)
    if config.paradigm == STATIC_DYNAMIC and static_method != config.method:
        row = _table_fields(config, static_method, STATIC_DYNAMIC)
        stage1.update({name: row[name] for name in STAGE1_FIELDS} if row is not None else {"lr_static": None})
    overrides: dict[str, Any] = {}
    if config.preset:
        overrides.update(load_preset_file(read_bytes(resolve(config.preset)).decode(), config.preset))
    overrides.update(config.overrides())
    fields.update(overrides)
    stage1.update(overrides)
    needed = ("lr_img",) if config.paradigm == "naive" else ("lr_dynamic", "lr_hal")
    missing = [name for name in needed if fields.get(name) is None]
    if config.paradigm == STATIC_DYNAMIC and not config.static and stage1.get("lr_static") is None:
        missing.insert(0, "lr_static")
    if missing and table is None:
        raise RayddError(
            f"no preset for {config.method} {config.paradigm} on {config.dataset} at IPC {config.ipc} (the seed's "
            "tables have none): "
            f"pass {' '.join('--' + n.replace('_', '-') + ' LR' for n in missing)} or --preset FILE"
        )
    if missing == ["lr_static"]:
        raise RayddError(
            f"no preset for stage 1 with --static-method {static_method} on {config.dataset} at IPC {config.ipc}: "
            f"pass --lr-static LR, --static-method {config.method} or --preset FILE"
        )
    return Preset(**fields), Preset(**stage1)
