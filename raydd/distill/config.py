"""``DistillConfig``: the command line of ``python -m raydd.distill``, one frozen dataclass.

Besides the run's own flags, every :class:`~raydd.distill.presets.Preset` field is a flag whose
default ``None`` means "the preset's value"; :meth:`DistillConfig.resolved_preset` applies table ->
``--preset FILE`` -> flags, in that order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Any

from raydd.config import check, check_choice, option
from raydd.data.specs import dataset_names
from raydd.devices import DEVICE_CHOICES
from raydd.distill.borrow import Borrowed, borrows, nearest_row
from raydd.distill.presets import METHODS, PARADIGMS, Preset, load_preset_file, table_preset
from raydd.errors import RayddError
from raydd.evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOL_NAMES
from raydd.models.hallucinator import VARIANTS
from raydd.storage import DEFAULT_STORE, read_bytes, resolve

PRESET_HELP = {
    "iterations": "distillation iterations per stage",
    "lr_img": "naive: lr of the synthetic videos",
    "lr_static": "static-dynamic stage 1: lr of the still images",
    "lr_dynamic": "static-dynamic stage 2: lr of the dynamic memories",
    "lr_hal": "static-dynamic stage 2: lr of the hallucinator H",
    "momentum": "SGD momentum of the synthetic tensors",
    "batch_real": "DM: real clips per class per matching sample; FRePo: real clips per sample",
    "batch_syn": "MTT: synthetic instances per student step (default: all)",
    "syn_steps": "MTT: student steps on synthetic data per sample",
    "expert_epochs": "MTT: expert epochs between start and target parameters",
    "max_start_epoch": "MTT: start epochs are drawn from [0, this)",
    "lr_teacher": "MTT: the student's initial lr",
    "learn_lr": "MTT: learn the student's lr",
    "lr_lr": "MTT: lr of the learned student lr",
    "hallucinator": "H: one Conv3D (conv) or Conv3D + ConvTranspose3d (convtranspose)",
    "static_per_ipc": "SPC = this x IPC still images per class",
    "dynamic_per_ipc": "DPC = this x IPC dynamic memories per class",
    "dynamic_channels": "channels of a dynamic memory",
    "dynamic_frames": "frames of a dynamic memory (default: the clip's)",
    "dynamic_scale": "dynamic memories are H/scale x W/scale pixels",
    "init": "naive and stage 1 start from random real clips/frames (real) or noise",
    "pixel_range": "naive and stage 1: data keeps the synthetic videos/images within real pixels' range (clamped "
    "after each step), free leaves them unbounded (the reference)",
    "hal_init": "stage 2 starts H at random (the reference) or as the identity composition video = static + dynamic",
    "dynamic_std": "stage 2 initialises the dynamic memories as Gaussian noise of this std (the reference: 1)",
    "dynamic_init": "stage 2 starts the dynamic memories as noise (the reference; see --dynamic-std) or as the motion "
    "of random real clips of their class (real)",
    "match_features": "DM: match the flattened feature map (map, the reference) or globally pooled features (pooled)",
    "network_width": "width of the matching networks (ConvNet; MiniC3D w/2, w, w)",
}
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
PRESET_CHOICES = {
    "hallucinator": VARIANTS,
    "init": ("real", "noise"),
    "hal_init": ("random", "identity"),
    "dynamic_init": ("noise", "real"),
    "pixel_range": ("free", "data"),
    "match_features": ("map", "pooled"),
}


@dataclasses.dataclass(frozen=True)
class _RunFields:
    dataset: str = option("builtin", "prepared dataset to distil (STORE/datasets/DATASET)", choices=dataset_names())
    method: str = option("dm", "base method", choices=METHODS)
    paradigm: str = option(
        "static-dynamic",
        "naive (full videos) or static-dynamic (stage 1 images, stage 2 dynamic memories + H)",
        choices=PARADIGMS,
    )
    static_method: str | None = option(
        None,
        "static-dynamic: the method that learns stage 1's still images (on single frames, image ConvNet; "
        "it takes lr_static, momentum, batch_real and MTT's fields from its own preset row); default: "
        f"{DEFAULT_STATIC_METHOD or 'the base method'}",
        choices=METHODS,
    )
    ipc: int = option(1, "instances per class (storage budget of IPC full videos)")
    store: str = option(
        DEFAULT_STORE,
        "store URI (path, file://, s3://...): reads datasets/ and experts/, writes distill/ and distilled/",
    )
    preset: str | None = option(
        None, "JSON preset file (from python -m raydd.tune) overriding the table's values; flags override it"
    )
    static: str | None = option(
        None, "reuse stage 1's still images from this URI (STORE/distill/static/...) instead of distilling them"
    )
    experts: str | None = option(
        None, "MTT experts folder of stage 2 / naive (default STORE/experts/DATASET/minic3d; stage 1 uses .../convnet)"
    )
    output: str | None = option(
        None, "where the distilled set goes (default STORE/distilled/DATASET/METHOD-PARADIGM-ipcK-HASH)"
    )
    workers: int = option(1, "Ray Train workers; how they share an iteration: --split")
    use_gpu: bool | None = option(
        None,
        "one GPU per Ray Train worker (NCCL), else CPU workers (gloo); default: GPUs when the Ray cluster has "
        "(or its autoscaler can launch) GPU nodes",
    )
    cpus_per_worker: float | None = option(
        None,
        "CPUs per Ray Train worker (its torch threads); default: a CPU run shares the cluster's CPUs among the "
        "workers, a GPU worker takes its node's CPUs per GPU",
    )
    samples_per_worker: int = option(
        1, "matching samples per iteration (--split classes: shared by the workers; samples: per worker)"
    )
    split: str = option(
        "classes",
        "how --workers share an iteration: classes (every worker runs the same matching samples for its own "
        "block of classes: the result of 1 worker, ~N x faster) or samples (each worker its own matching "
        "samples: N x the samples an iteration)",
        choices=("classes", "samples"),
    )
    memory_bounded: bool = option(
        False,
        "MTT: rebuild one student step at a time in the backward pass (same gradient, memory independent of syn_steps)",
    )
    checkpoint_every: int = option(50, "iterations between checkpoints (in STORE/distill/runs)")
    max_failures: int = option(1, "times Ray Train restarts a failed worker group from the last checkpoint")
    seed: int = option(0, "seed of every random choice (initialisation, batches, experts, pairing)")
    device: str = option("auto", "device of each worker when --no-use-gpu", choices=DEVICE_CHOICES)
    eval_runs: int = option(3, "evaluation runs of the distilled set at the end (0: none)")
    eval_epochs: int | None = option(None, "evaluation epochs (default: the evaluation preset's, e.g. 500 for MiniC3D)")
    eval_model: str = option("minic3d", "network the evaluation trains", choices=("minic3d", "cnn_gru", "cnn_lstm"))
    eval_protocol: str = option(
        DEFAULT_PROTOCOL, "evaluation protocol (see python -m raydd.evaluate --help)", choices=PROTOCOL_NAMES
    )
    overwrite: bool = option(False, "distil again even when the output already holds this distilled set")
    experiment: str = option("raydd-distill", "MLflow experiment name")
    ray_address: str | None = option(None, "Ray cluster to join (default: RAY_ADDRESS, else a new local cluster)")
    plan: bool = option(
        False,
        "print the plan (preset, memory per worker, bytes per node, Ray resources) and start nothing; "
        "with --ray-address or RAY_ADDRESS, refuse what that cluster cannot place",
    )


def _override_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    hints = typing.get_type_hints(Preset)
    fields = []
    for field in dataclasses.fields(Preset):
        base = (
            typing.get_args(hints[field.name])[0]
            if typing.get_origin(hints[field.name]) in (typing.Union, __import__("types").UnionType)
            else hints[field.name]
        )
        fields.append(
            (
                field.name,
                base | None,
                option(
                    None, f"{PRESET_HELP[field.name]} (default: the preset's)", choices=PRESET_CHOICES.get(field.name)
                ),
            )
        )
    return fields


def _validate(config: Any) -> None:
    check_choice(config.dataset, "dataset", dataset_names())
    check_choice(config.method, "method", METHODS)
    check_choice(config.paradigm, "paradigm", PARADIGMS)
    check_choice(config.eval_protocol, "eval_protocol", PROTOCOL_NAMES)
    if config.static_method is not None:
        check_choice(config.static_method, "static_method", METHODS)
    for name in ("ipc", "workers", "samples_per_worker", "checkpoint_every"):
        check(getattr(config, name) >= 1, name, "a positive integer")
    check(config.cpus_per_worker is None or config.cpus_per_worker > 0, "cpus_per_worker", "a positive number")
    check(
        config.max_failures >= 0 and config.eval_runs >= 0,
        "max_failures" if config.max_failures < 0 else "eval_runs",
        "0 or a positive integer",
    )
    for name in (
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
        "eval_epochs",
    ):
        check(getattr(config, name) is None or getattr(config, name) >= 1, name, "a positive integer")
    for name in ("lr_img", "lr_static", "lr_dynamic", "lr_hal", "lr_teacher", "lr_lr"):
        check(getattr(config, name) is None or getattr(config, name) > 0, name, "a positive number")
    check(config.momentum is None or 0 <= config.momentum < 1, "momentum", "a number in [0, 1)")
    check(config.dynamic_std is None or config.dynamic_std >= 0, "dynamic_std", "0 or a positive number")


def _stage1_method(config: Any) -> str:
    """The method that learns stage 1's still images."""
    if config.static_method is not None:
        return config.static_method
    default = DEFAULT_STATIC_METHOD
    if default is None:
        return config.method
    if borrows(config.dataset) or table_preset(default, STATIC_DYNAMIC, config.dataset, config.ipc) is not None:
        return default
    return config.method


def _borrowed(config: Any, method: str | None = None, paradigm: str | None = None) -> Borrowed | None:
    """The nearest table row a dataset without rows (a folder of videos) borrows; None for any other."""
    method, paradigm = method or config.method, paradigm or config.paradigm
    if not borrows(config.dataset) or table_preset(method, paradigm, config.dataset, config.ipc) is not None:
        return None
    from raydd.data.reader import open_prepared

    dataset = open_prepared(resolve(config.store).child("datasets", config.dataset).uri)
    clip_shape = tuple(dataset.manifest.metadata["clip_shape"])
    return nearest_row(method, paradigm, config.ipc, clip_shape, len(dataset.classes))


def _table_fields(config: Any, method: str, paradigm: str) -> dict[str, Any] | None:
    table = table_preset(method, paradigm, config.dataset, config.ipc)
    if table is not None:
        return table.to_dict()
    borrowed = _borrowed(config, method, paradigm)
    return None if borrowed is None else Preset(**borrowed.fields).to_dict()


def _presets(config: Any) -> tuple[Preset, Preset]:
    """(the run's preset, stage 1's): table (or the borrowed row) -> stage 1's method's row for its
    STAGE1_FIELDS -> ``--preset FILE`` -> flags."""
    table = _table_fields(config, config.method, config.paradigm)
    fields = dict(table or {})
    stage1 = dict(fields)
    static_method = _stage1_method(config)
    if config.paradigm == STATIC_DYNAMIC and static_method != config.method:
        row = _table_fields(config, static_method, STATIC_DYNAMIC)
        stage1.update({name: row[name] for name in STAGE1_FIELDS} if row is not None else {"lr_static": None})
    overrides: dict[str, Any] = {}
    if config.preset:
        overrides.update(load_preset_file(read_bytes(resolve(config.preset)).decode(), config.preset))
    flags = {f.name: getattr(config, f.name) for f in dataclasses.fields(Preset)}
    overrides.update({name: value for name, value in flags.items() if value is not None})
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


def _resolved_preset(config: Any) -> Preset:
    return _presets(config)[0]


def _static_preset(config: Any) -> Preset:
    """Stage 1's preset: the run's, with STAGE1_FIELDS from stage 1's method's row when it is not the base method."""
    return _presets(config)[1]


def _settings_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


DistillConfig = dataclasses.make_dataclass(
    "DistillConfig",
    [(f.name, f.type, f) for f in dataclasses.fields(_RunFields)] + _override_fields(),
    frozen=True,
    namespace={
        "__post_init__": _validate,
        "resolved_preset": _resolved_preset,
        "static_preset": _static_preset,
        "stage1_method": _stage1_method,
        "borrowed": _borrowed,
        "__module__": __name__,
        "__doc__": "The flags of python -m raydd.distill (run flags + one override per preset field).",
    },
)
settings_hash = _settings_hash
