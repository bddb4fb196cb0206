"""``DistillConfig``: the command line of ``python -m raydd.distill``, one frozen dataclass.

Besides the run's own flags, every :class:`~raydd.distill.presets.Preset` field is a flag (:data:`PresetFlags`,
derived from Preset's fields) whose default ``None`` means "the preset's value";
:func:`~raydd.distill.stage_presets.resolve_presets` applies table -> ``--preset-file FILE`` -> flags, once, at the
command's edge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Any

from raydd.config import (
    ADVANCED,
    PRESET,
    DeviceSection,
    RaySection,
    SeedSection,
    StoreSection,
    TrackingSection,
    check,
    check_choice,
    option,
    prefixed,
)
from raydd.data.specs import dataset_names
from raydd.devices import DEVICE_CHOICES
from raydd.distill import stage_presets
from raydd.distill.presets import METHODS, PARADIGMS, PRESET_FIELDS, Preset
from raydd.evaluation.section import EvalSection, check_evaluation

PRESETS_VALUE = " (default: the preset's)"


def _override_flag(field: dataclasses.Field, hint: Any) -> tuple[str, Any, dataclasses.Field]:
    """The flag of a preset field: its type or None (the preset's value), its help and choices."""
    help = field.metadata["help"] + PRESETS_VALUE
    return field.name, hint | None, option(None, help, choices=field.metadata["choices"], group=PRESET)


# One flag per Preset field, in Preset's order, derived from its declaration (help, choices, bounds).
PresetFlags = dataclasses.make_dataclass(
    "PresetFlags",
    [_override_flag(field, typing.get_type_hints(Preset)[field.name]) for field in PRESET_FIELDS],
    frozen=True,
)
PresetFlags.__module__ = __name__


# The closing evaluation: the evaluation section as --eval-* flags (0 runs: none), advanced but for the run count.
EvalFlags = prefixed(EvalSection, "eval_", "EvalFlags", notes={"runs": "0: none"}, group=ADVANCED)


@dataclasses.dataclass(frozen=True)
class DistillConfig(StoreSection, RaySection, TrackingSection, DeviceSection, SeedSection, EvalFlags, PresetFlags):
    """The flags of python -m raydd.distill (run flags, the closing evaluation's, one override per preset field)."""

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
        f"{stage_presets.DEFAULT_STATIC_METHOD or 'the base method'}",
        choices=METHODS,
    )
    ipc: int = option(1, "instances per class (storage budget of IPC full videos)")
    store: str | None = option(
        None,
        "store URI (path, file://, s3://...; default $RAYDD_STORE, else ./raydd-store): reads datasets/ and "
        "experts/, writes distill/ and distilled/",
    )
    preset_file: str | None = option(
        None,
        "JSON preset file (from python -m raydd.tune) overriding the table's values; flags override it",
        group=PRESET,
        deprecated=("--preset",),
    )
    static: str | None = option(
        None,
        "reuse stage 1's still images from this URI (STORE/distill/static/...) instead of distilling them",
        group=ADVANCED,
    )
    experts: str | None = option(
        None,
        "MTT experts folder of stage 2 / naive (default STORE/experts/DATASET/minic3d; stage 1 uses .../convnet)",
        group=ADVANCED,
    )
    output: str | None = option(
        None, "where the distilled set goes (default STORE/distilled/DATASET/METHOD-PARADIGM-ipcK-HASH)", group=ADVANCED
    )
    workers: int = option(1, "Ray Train workers; how they share an iteration: --worker-split")
    use_gpu: bool | None = option(
        None,
        "one GPU per Ray Train worker (NCCL), else CPU workers (gloo); default: GPUs when the Ray cluster has "
        "(or its autoscaler can launch) GPU nodes",
        group=ADVANCED,
    )
    cpus_per_worker: float | None = option(
        None,
        "CPUs per Ray Train worker (its torch threads); default: a CPU run shares the cluster's CPUs among the "
        "workers, a GPU worker takes its node's CPUs per GPU",
        group=ADVANCED,
    )
    samples_per_worker: int = option(
        1,
        "matching samples per iteration (--worker-split classes: shared by the workers; samples: per worker)",
        group=ADVANCED,
    )
    worker_split: str = option(
        "classes",
        "how --workers share an iteration: classes (every worker runs the same matching samples for its own "
        "block of classes: the result of 1 worker, ~N x faster) or samples (each worker its own matching "
        "samples: N x the samples an iteration)",
        choices=("classes", "samples"),
        group=ADVANCED,
        deprecated=("--split",),
    )
    memory_bounded: bool = option(
        False,
        "MTT: rebuild one student step at a time in the backward pass (same gradient, memory independent of syn_steps)",
        group=ADVANCED,
    )
    checkpoint_every: int = option(50, "iterations between checkpoints (in STORE/distill/runs)", group=ADVANCED)
    max_failures: int = option(
        1, "times Ray Train restarts a failed worker group from the last checkpoint", group=ADVANCED
    )
    seed: int = option(0, "seed of every random choice (initialisation, batches, experts, pairing)")
    device: str = option("auto", "device of each worker when --no-use-gpu", choices=DEVICE_CHOICES)
    overwrite: bool = option(False, "distil again even when the output already holds this distilled set")
    experiment: str = option("raydd-distill", "MLflow experiment name")
    plan: bool = option(
        False,
        "print the plan (preset, memory per worker, bytes per node, Ray resources) and start nothing; "
        "with --ray-address or RAY_ADDRESS, refuse what that cluster cannot place",
    )

    def __post_init__(self) -> None:
        check_choice(self.dataset, "dataset", dataset_names())
        check_choice(self.method, "method", METHODS)
        check_choice(self.paradigm, "paradigm", PARADIGMS)
        check_evaluation(self.unprefixed(), "eval_", min_runs=0)
        if self.static_method is not None:
            check_choice(self.static_method, "static_method", METHODS)
        for name in ("ipc", "workers", "samples_per_worker", "checkpoint_every"):
            check(getattr(self, name) >= 1, name, "a positive integer")
        check(self.cpus_per_worker is None or self.cpus_per_worker > 0, "cpus_per_worker", "a positive number")
        check(self.max_failures >= 0, "max_failures", "0 or a positive integer")
        for field in PRESET_FIELDS:
            value, bound = getattr(self, field.name), field.metadata["bound"]
            if value is not None and bound is not None:
                check(bound.accepts(value), field.name, bound.allowed)

    def overrides(self) -> dict[str, Any]:
        """The preset fields the flags give (not None), by name: what they override in the preset."""
        given = {field.name: getattr(self, field.name) for field in PRESET_FIELDS}
        return {name: value for name, value in given.items() if value is not None}


def settings_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]
