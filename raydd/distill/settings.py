"""``DistillConfig``: the command line of ``python -m raydd.distill``, one frozen dataclass.

Besides the run's own flags, every :class:`~raydd.distill.presets.Preset` field is a flag
(:class:`~raydd.distill.overrides.PresetOverrides`) whose default ``None`` means "the preset's value";
:meth:`DistillConfig.resolved_preset` applies table -> ``--preset FILE`` -> flags, in that order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
    resolve_defaults,
    to_dict,
)
from raydd.data.specs import dataset_names
from raydd.devices import DEVICE_CHOICES
from raydd.distill import stage_presets
from raydd.distill.borrow import Borrowed
from raydd.distill.overrides import PresetOverrides
from raydd.distill.presets import METHODS, PARADIGMS, Preset
from raydd.evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOL_NAMES


@dataclasses.dataclass(frozen=True)
class DistillConfig(StoreSection, RaySection, TrackingSection, DeviceSection, SeedSection, PresetOverrides):
    """The flags of python -m raydd.distill (run flags + one override per preset field)."""

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
    preset: str | None = option(
        None,
        "JSON preset file (from python -m raydd.tune) overriding the table's values; flags override it",
        group=PRESET,
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
    workers: int = option(1, "Ray Train workers; how they share an iteration: --split")
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
        "matching samples per iteration (--split classes: shared by the workers; samples: per worker)",
        group=ADVANCED,
    )
    split: str = option(
        "classes",
        "how --workers share an iteration: classes (every worker runs the same matching samples for its own "
        "block of classes: the result of 1 worker, ~N x faster) or samples (each worker its own matching "
        "samples: N x the samples an iteration)",
        choices=("classes", "samples"),
        group=ADVANCED,
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
    eval_runs: int = option(3, "evaluation runs of the distilled set at the end (0: none)")
    eval_epochs: int | None = option(
        None, "evaluation epochs (default: the evaluation preset's, e.g. 500 for MiniC3D)", group=ADVANCED
    )
    eval_model: str = option(
        "minic3d", "network the evaluation trains", choices=("minic3d", "cnn_gru", "cnn_lstm"), group=ADVANCED
    )
    eval_protocol: str = option(
        DEFAULT_PROTOCOL,
        "evaluation protocol (see python -m raydd.evaluate --help)",
        choices=PROTOCOL_NAMES,
        group=ADVANCED,
    )
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
        check_choice(self.eval_protocol, "eval_protocol", PROTOCOL_NAMES)
        if self.static_method is not None:
            check_choice(self.static_method, "static_method", METHODS)
        for name in ("ipc", "workers", "samples_per_worker", "checkpoint_every"):
            check(getattr(self, name) >= 1, name, "a positive integer")
        check(self.cpus_per_worker is None or self.cpus_per_worker > 0, "cpus_per_worker", "a positive number")
        check(
            self.max_failures >= 0 and self.eval_runs >= 0,
            "max_failures" if self.max_failures < 0 else "eval_runs",
            "0 or a positive integer",
        )
        self.check_overrides()
        check(self.eval_epochs is None or self.eval_epochs >= 1, "eval_epochs", "a positive integer")

    def resolved(self) -> dict[str, Any]:
        """What ``--print-config`` prints: the flags, every preset field as the run uses it (table row ->
        ``--preset FILE`` -> flags) and, for static-dynamic, stage 1's method and (``stage1_preset``) the fields its
        preset changes, if any."""
        config = resolve_defaults(self)
        data = {**to_dict(config), **config.resolved_preset().to_dict()}
        if config.paradigm != "naive":
            stage1 = config.static_preset().to_dict()
            data["static_method"] = config.stage1_method()
            changed = {name: value for name, value in stage1.items() if value != data[name]}
            if changed:  # only then: the printed config stays a DistillConfig's fields otherwise
                data["stage1_preset"] = changed
        return data

    def resolved_preset(self) -> Preset:
        return stage_presets.presets(self)[0]

    def static_preset(self) -> Preset:
        """Stage 1's preset: the run's, with STAGE1_FIELDS from stage 1's method's row when it is not the base
        method."""
        return stage_presets.presets(self)[1]

    def stage1_method(self) -> str:
        """The method that learns stage 1's still images."""
        return stage_presets.stage1_method(self)

    def borrowed(self, method: str | None = None, paradigm: str | None = None) -> Borrowed | None:
        """The nearest table row a dataset without rows (a folder of videos) borrows; None for any other."""
        return stage_presets.borrowed(self, method, paradigm)


def settings_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]
