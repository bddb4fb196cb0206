"""The evaluation job behind ``python -m raydd.evaluate`` (and distill's closing evaluation, and the pipeline):
train N fresh networks on a training set, in parallel on Ray, and score them on the real test split (final
epoch, mean ± std) under a named protocol. Logged to MLflow."""

from __future__ import annotations

import dataclasses
from typing import Any

from raydd.cluster import capacity
from raydd.config import (
    DeviceSection,
    RaySection,
    SeedSection,
    StoreSection,
    TrackingSection,
    check,
    option,
    to_dict,
)
from raydd.devices import DEVICE_CHOICES
from raydd.evaluation.plan import plan_evaluation
from raydd.evaluation.report import describe, storage_text, summarize
from raydd.evaluation.runs import execute
from raydd.evaluation.section import EvalSection, check_evaluation
from raydd.layout import StoreLayout, default_store
from raydd.parallel import ensure_ray, run_tasks
from raydd.resources import tasks_at_once
from raydd.tracking import mlflow_run

BUILTIN = "builtin"  # the dataset --data defaults to, in the store
EVAL_FIELDS = tuple(field.name for field in dataclasses.fields(EvalSection))


@dataclasses.dataclass(frozen=True)
class EvalConfig(StoreSection, RaySection, TrackingSection, DeviceSection, SeedSection, EvalSection):
    """The flags of python -m raydd.evaluate: the evaluation section (:class:`EvalSection`) and what to train on."""

    data: str | None = option(
        None, "prepared dataset (STORE/datasets/NAME) or distilled set to train on (default: STORE/datasets/builtin)"
    )
    test: str | None = option(
        None,
        "prepared dataset whose test split scores the runs (default: --data, or the dataset a distilled set came from)",
    )
    random_ipc: int = option(
        0, "train on K random real clips per class instead of all (the baseline a distilled set must beat)"
    )
    stills_only: bool = option(
        False, "train on a static-dynamic set's stage-1 still images, each repeated over the T frames"
    )
    lr: float | None = option(None, "SGD learning rate (default: the lr schedule's); x0.1 at half the epochs")
    batch_size: int = option(
        256, "training batch size (256 as the reference for distilled sets; use 32-64 on full real data)"
    )
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "SGD weight decay")
    seed: int = option(0, "seed of run 0; run i uses seed + i")
    device: str = option("auto", "device of each run", choices=DEVICE_CHOICES)
    cpus_per_run: float = option(1.0, "CPUs reserved by each run's Ray task (its torch threads)")
    gpus_per_run: float = option(0.0, "GPUs reserved by each run's Ray task (fractions share a GPU)")
    experiment: str = option("raydd-evaluate", "MLflow experiment name")

    def __post_init__(self) -> None:
        check_evaluation({name: getattr(self, name) for name in EVAL_FIELDS})
        check(self.random_ipc >= 0, "random_ipc", "0 (all clips) or a positive number of clips per class")
        check(self.lr is None or self.lr > 0, "lr", "a positive number")
        check(self.batch_size >= 1, "batch_size", "a positive integer")
        check(self.cpus_per_run > 0, "cpus_per_run", "a positive number")
        check(self.gpus_per_run >= 0, "gpus_per_run", "0 or a positive number (fractions allowed)")

    def with_store_defaults(self) -> EvalConfig:
        """The defaults that depend on the store, resolved when the job runs (not at import): the store itself
        (:func:`~raydd.layout.default_store`) and ``--data`` (that store's built-in dataset)."""
        store = self.store or default_store()
        return dataclasses.replace(self, store=store, data=self.data or StoreLayout.of(store).dataset(BUILTIN).uri)


def _at_once(config: EvalConfig) -> int:
    """GPU runs are all submitted, so that an autoscaler sees them and launches GPU nodes; CPU runs fill the CPUs."""
    return config.runs if config.gpus_per_run else tasks_at_once(config.cpus_per_run, 0, capacity())


_PLAN_FIELDS = (
    *("data", "test", "model", "runs", "random_ipc", "epochs", "lr", "batch_size", "momentum"),
    *("weight_decay", "seed", "device", "stills_only"),
)


def evaluate(config: EvalConfig, *, parent_run_id: str | None = None) -> dict[str, Any]:
    """Metrics (percentages: ``top1_mean``/``_std``, ``static_top1_*``, ``dynamic_top1_*``, ...), plus
    ``protocol`` and, where the training set has one, ``storage_ratio``. ``parent_run_id``: the MLflow run this
    evaluation's run is nested under (distill's closing evaluation)."""
    config = config.with_store_defaults()
    fields = to_dict(config)
    plan = plan_evaluation(**{k: fields[k] for k in _PLAN_FIELDS}, preset=config.lr_schedule)
    reference = plan.reference
    ensure_ray(config.ray_address)
    tags = {
        "raydd.dataset": reference.spec.name,
        "raydd.dataset_manifest_sha256": reference.manifest.content_sha256(),
        "raydd.train_kind": plan.kind,
        "raydd.protocol": plan.protocol,
    }
    run_name = f"{config.model}-{plan.kind}-{reference.spec.name}-{plan.protocol}"
    with mlflow_run(config.store, config.experiment, run_name, fields, tags, parent_run_id=parent_run_id) as tracker:
        tracker.log_params(
            {
                "input.mean": list(reference.mean),
                "input.std": list(reference.std),
                "input.test_dataset": str(reference.location),
            }
        )
        tracker.log_params({"raydd.protocol": plan.protocol})
        calls = [(task,) for task in plan.tasks]
        results = sorted(
            run_tasks(
                execute,
                calls,
                description=f"evaluate {config.model}",
                weights=[1] * len(calls),
                unit="run",
                max_in_flight=_at_once(config),
                num_cpus=config.cpus_per_run,
                num_gpus=config.gpus_per_run,
            ),
            key=lambda r: r.run,
        )
        for result in results:
            for epoch, loss in enumerate(result.losses):
                tracker.log_metrics({f"run{result.run}/train_loss": loss}, step=epoch)
            tracker.log_metrics(
                {f"run{result.run}/top1": 100 * result.top1, f"run{result.run}/top{result.top_k}": 100 * result.top5}
            )
        metrics: dict[str, Any] = summarize(results, reference.classes, reference.spec.static_classes)
        storage = {} if plan.storage_ratio is None else {"storage_ratio": plan.storage_ratio}
        seconds = sum(r.seconds for r in results) / len(results)
        tracker.log_metrics({**metrics, **storage, "train_clips": plan.train_clips, "seconds_per_run": seconds})
        tracker.log_dict(
            {"per_class": {f"run{r.run}": dict(zip(reference.classes, r.per_class)) for r in results}},
            "per_class_accuracy.json",
        )
    metrics.update(storage, protocol=plan.protocol)
    clips = f"{plan.train_clips} clips, storage {storage_text(plan.storage_ratio)}"
    summary = describe(metrics, len(results), results[0].top_k)
    print(f"{config.model} trained on {plan.kind} ({clips}), tested on {reference.spec.name}: {summary}")
    return metrics
