"""``python -m raydd.pipeline``'s engine: prepare -> experts (MTT only) -> distil static-dynamic and naive ->
the comparison it ends with: four training sets (the
static-dynamic set, the naive set, the static-dynamic set's stage-1 stills alone, random real clips at the
same IPC) evaluated under one protocol, and one table with storage, class groups and the gain over random."""

from __future__ import annotations

import dataclasses
from typing import Any

from raydd.cluster import capacity
from raydd.config import (
    RaySection,
    SeedSection,
    StoreSection,
    check,
    check_choice,
    option,
    parse_config,
    prefixed,
    resolve_defaults,
)
from raydd.data.preparation import ClipSection, PrepareConfig, prepare
from raydd.data.specs import dataset_names
from raydd.distill.driver import distill
from raydd.distill.methods.catalog import method_info
from raydd.distill.presets import METHODS
from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import resolve_presets
from raydd.evaluation.job import EvalConfig, evaluate
from raydd.evaluation.protocols import FREPO, PROTOCOL, STANDARD
from raydd.evaluation.report import RANDOM_REAL_ROW, format_comparison
from raydd.evaluation.section import EvalSection, check_evaluation
from raydd.experts.job import ExpertsConfig, train_experts
from raydd.layout import StoreLayout
from raydd.parallel import ensure_ray
from raydd.resources import evaluation_devices

# One schedule for all four rows, so that they compare ("auto" would give a FRePo set's rows frepo and the random
# row standard).
ONE_SCHEDULE = (STANDARD, FREPO)
# Every row's evaluation: the evaluation section as --eval-* flags. Two defaults are the pipeline's own, as the
# main job's table was made: 100 epochs (the paper's 500 for MiniC3D is GPU-sized; 100 keeps the main job to
# minutes on CPU) and the standard schedule (lr 1e-2; frepo's lr 1e-4 is made for 1000 epochs: with fewer it does
# not train). Old spelling: --eval-preset.
PipelineEvalFlags = prefixed(
    EvalSection,
    "eval_",
    "PipelineEvalFlags",
    only=("runs", "epochs", "lr_schedule"),
    defaults={"epochs": 100, "lr_schedule": STANDARD},
    deprecated={"lr_schedule": ("--eval-preset",)},
)


@dataclasses.dataclass(frozen=True)
class PipelineConfig(StoreSection, RaySection, SeedSection, ClipSection, PipelineEvalFlags):
    """The flags of python -m raydd.pipeline: the dataset and how it is prepared (the clip shape, the test split),
    the method, and the evaluation of every row (--eval-*)."""

    dataset: str = option("builtin", "dataset to prepare, distil and evaluate", choices=dataset_names())
    source: str | None = option(None, "raw videos of the dataset (builtin needs none)")
    method: str = option("dm", "base method", choices=METHODS)
    ipc: int = option(1, "instances per class")
    store: str | None = option(
        None, "store URI for every stage's output and mlflow.db (default $RAYDD_STORE, else ./raydd-store)"
    )
    iterations: int | None = option(None, "distillation iterations per stage (default: the preset's)")
    seed: int = option(0, "seed of the distillations and of evaluation run 0 (run i uses seed + i)")
    workers: int = option(1, "Ray Train workers per distillation")
    ray_address: str | None = option(None, "Ray cluster to join (default: RAY_ADDRESS, else a new local cluster)")

    def __post_init__(self) -> None:
        check_choice(self.dataset, "dataset", dataset_names())
        check_choice(self.method, "method", METHODS)
        self.check_clips()
        check_evaluation(self.unprefixed(), "eval_")
        check(self.eval_epochs is not None, "eval_epochs", "a positive integer")
        check_choice(self.eval_lr_schedule, "eval_lr_schedule", ONE_SCHEDULE)
        for name in ("ipc", "workers"):
            check(getattr(self, name) >= 1, name, "a positive integer")


def row_settings(
    config: PipelineConfig, outputs: dict[str, str], devices: dict[str, float] | None = None
) -> dict[str, EvalConfig]:
    """{row name: its evaluation} for the distilled sets in ``outputs`` (by paradigm), the stills alone and random
    real clips: one protocol, epochs and lr preset for every row, so that the rows compare. ``devices``
    (:func:`~raydd.resources.evaluation_devices`) is what each run reserves."""
    sets = {
        f"{config.method} static-dynamic": {"data": outputs["static-dynamic"]},
        f"{config.method} naive": {"data": outputs["naive"]},
        "stills only (stage 1)": {"data": outputs["static-dynamic"], "stills_only": True},
        RANDOM_REAL_ROW: {"data": StoreLayout.of(config.store).dataset(config.dataset).uri, "random_ipc": config.ipc},
    }
    return {
        name: EvalConfig(
            **training_set,
            **config.unprefixed(),  # runs, epochs, lr_schedule: the same for every row
            seed=config.seed,
            store=config.store,
            ray_address=config.ray_address,
            **(devices or {}),
        )
        for name, training_set in sets.items()
    }


def compare(config: PipelineConfig, outputs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Returns {row name: {storage_ratio, metrics, output}}, every row (:func:`row_settings`) evaluated here, on
    GPUs where the cluster has them (as ``raydd.distill``'s closing evaluation)."""
    ensure_ray(config.ray_address)
    devices = evaluation_devices(capacity())
    rows: dict[str, dict[str, Any]] = {}
    for name, settings in row_settings(config, outputs, devices).items():
        metrics = evaluate(settings)
        rows[name] = {"storage_ratio": metrics.get("storage_ratio", 1.0), "metrics": metrics, "output": settings.data}
    return rows


def format_table(rows: dict[str, dict[str, Any]], config: PipelineConfig) -> str:
    title = (
        f"\n{config.dataset}, IPC {config.ipc}, MiniC3D trained {config.eval_epochs} epochs "
        f"({config.eval_lr_schedule} lr), {config.eval_runs} runs"
    )
    table = {name: (row["storage_ratio"], row["metrics"]) for name, row in rows.items()}
    return format_comparison(table, protocol=PROTOCOL.name, title=title)


# Experts for the built-in dataset: small MiniC3D / ConvNet (width 32), a batch small enough to take
# several steps per epoch on 300 clips, and the built-in MTT presets' lr_teacher.
BUILTIN_EXPERTS = ["--width", "32", "--batch-size", "32", "--lr-teacher", "0.05", "--epochs", "11"]


def _flags(**values: Any) -> list[str]:
    return [
        item
        for key, value in values.items()
        if value is not None
        for item in (f"--{key.replace('_', '-')}", str(value))
    ]


def run_pipeline(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """Returns {row name: {storage_ratio, metrics, output}} (:func:`compare`); the
    distillations run no closing evaluation of their own."""
    config = resolve_defaults(config)  # a config built in code may leave the store to $RAYDD_STORE
    common = {"store": config.store, "ray_address": config.ray_address}
    prepare(PrepareConfig(dataset=config.dataset, source=config.source, **config.clip_options(), **common))
    if method_info(config.method).needs_experts:
        extra = BUILTIN_EXPERTS if config.dataset == "builtin" else []
        for model in ("minic3d", "convnet"):
            argv = ["--dataset", config.dataset, "--model", model, *_flags(**common), *extra]
            train_experts(parse_config(ExpertsConfig, argv, "raydd.experts")[0])
    outputs = {}
    for paradigm in ("static-dynamic", "naive"):
        argv = _flags(
            dataset=config.dataset,
            method=config.method,
            paradigm=paradigm,
            ipc=config.ipc,
            iterations=config.iterations,
            workers=config.workers,
            seed=config.seed,
            eval_runs=0,
            **common,
        )
        distill_config = parse_config(DistillConfig, argv, "raydd.distill")[0]
        outputs[paradigm] = distill(distill_config, resolve_presets(distill_config)).output
    rows = compare(config, outputs)
    print(format_table(rows, config))
    return rows
