"""The presets a :class:`~raydd.distill.settings.DistillConfig` runs with, resolved once, at the command's edge:
the table's row (or the row a dataset without rows borrows) -> stage 1's method's row for its
:data:`~raydd.distill.presets.STAGE1_METHOD_FIELDS` -> ``--preset-file FILE`` -> flags. Engines receive the frozen
:class:`RunPresets`; nothing after it reads the preset file or opens the dataset for a preset."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from raydd.config import resolve_defaults, to_dict
from raydd.distill.borrow import Borrowed, borrows, nearest_row
from raydd.distill.presets import STAGE1_METHOD_FIELDS, Preset, load_preset_file, table_preset
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
STATIC_DYNAMIC = "static-dynamic"


@dataclasses.dataclass(frozen=True)
class RunPresets:
    """What a run's presets resolved to."""

    run: Preset  # stage 2's, or naive's one stage
    stage1: Preset  # stage 1's (the run's, unless stage 1's method's row changes its STAGE1_METHOD_FIELDS)
    stage1_method: str
    borrowed: Borrowed | None  # the row a dataset without rows (a folder of videos) borrowed


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


FolderShape = tuple[tuple[int, ...], int]  # (clip shape, class count) of a dataset without rows


def _folder_shape(config: DistillConfig) -> FolderShape:
    from raydd.data.reader import open_prepared

    dataset = open_prepared(StoreLayout.of(config.store).dataset(config.dataset).uri)
    return tuple(dataset.manifest.metadata["clip_shape"]), len(dataset.classes)


def _row(
    config: DistillConfig, method: str, paradigm: str, folder_shape: FolderShape | None
) -> tuple[dict[str, Any] | None, Borrowed | None]:
    """(the row's fields, or None where there is none; the row a dataset without rows borrowed)."""
    table = table_preset(method, paradigm, config.dataset, config.ipc)
    if table is not None:
        return table.to_dict(), None
    row = None if folder_shape is None else nearest_row(method, paradigm, config.ipc, *folder_shape)
    return (None, None) if row is None else (Preset(**row.fields).to_dict(), row)


def resolve_presets(config: DistillConfig) -> RunPresets:
    """The run's presets: reads ``--preset-file FILE`` once and, for a dataset without rows (a folder of videos), its
    manifest once."""
    config = resolve_defaults(config)  # a config built in code may leave the store to $RAYDD_STORE
    folder_shape = _folder_shape(config) if borrows(config.dataset) else None
    table, borrowed = _row(config, config.method, config.paradigm, folder_shape)
    fields = dict(table or {})
    stage1 = dict(fields)
    static_method = stage1_method(config)
    if config.paradigm == STATIC_DYNAMIC and static_method != config.method:
        row, _ = _row(config, static_method, STATIC_DYNAMIC, folder_shape)
        stage1.update({name: row[name] for name in STAGE1_METHOD_FIELDS} if row is not None else {"lr_static": None})
    overrides: dict[str, Any] = {}
    if config.preset_file:
        overrides.update(load_preset_file(read_bytes(resolve(config.preset_file)).decode(), config.preset_file))
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
            f"pass {' '.join('--' + n.replace('_', '-') + ' LR' for n in missing)} or --preset-file FILE"
        )
    if missing == ["lr_static"]:
        raise RayddError(
            f"no preset for stage 1 with --static-method {static_method} on {config.dataset} at IPC {config.ipc}: "
            f"pass --lr-static LR, --static-method {config.method} or --preset-file FILE"
        )
    return RunPresets(Preset(**fields), Preset(**stage1), static_method, borrowed)


def printed_config(config: DistillConfig) -> dict[str, Any]:
    """What ``--print-config`` prints: the flags, every preset field as the run uses it (table row ->
    ``--preset-file FILE`` -> flags) and, for static-dynamic, stage 1's method and (``stage1_preset``) the fields its
    preset changes, if any."""
    presets = resolve_presets(config)
    data = {**to_dict(config), **presets.run.to_dict()}
    if config.paradigm != "naive":
        data["static_method"] = presets.stage1_method
        changed = {name: value for name, value in presets.stage1.to_dict().items() if value != data[name]}
        if changed:  # only then: the printed config stays a DistillConfig's fields otherwise
            data["stage1_preset"] = changed
    return data
