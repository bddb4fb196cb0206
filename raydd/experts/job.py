"""The experts job: an :class:`ExpertsConfig` in, expert trajectories in STORE/experts/DATASET/MODEL out.

:func:`train_experts` trains the missing experts as parallel Ray tasks (:func:`~raydd.experts.trainer.run_expert`),
records the run in MLflow and publishes the manifest, also when some expert failed. ``python -m raydd.experts`` is
its command line.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time

from raydd import metrics
from raydd.cluster import capacity
from raydd.config import (
    DeviceSection,
    RaySection,
    SeedSection,
    StoreSection,
    TrackingSection,
    check,
    check_choice,
    option,
    to_dict,
)
from raydd.data.reader import PreparedDataset, open_prepared
from raydd.data.specs import dataset_names
from raydd.experts.parameters import ModelSpec
from raydd.experts.trainer import EXPERT_MODELS, ExpertSettings, ExpertTask, model_options, run_expert
from raydd.experts.trajectories import DTYPES, experts_manifest, published
from raydd.layout import StoreLayout
from raydd.parallel import ensure_ray, run_tasks
from raydd.resources import AUTO_GPUS_PER_EXPERT, auto_gpus, tasks_at_once
from raydd.storage import (
    Manifest,
    read_manifest,
    require_writable_root,
    write_manifest,
)
from raydd.tracking import mlflow_run

# Suppl.: 30 trajectories for MiniUCF and HMDB51, 20 for Kinetics-400 and SSv2.
DEFAULT_EXPERTS = {"miniucf": 30, "ucf101": 30, "hmdb51": 30, "k400": 20, "ssv2": 20, "builtin": 4}


@dataclasses.dataclass(frozen=True)
class ExpertsConfig(StoreSection, RaySection, TrackingSection, DeviceSection, SeedSection):
    """Trajectories land in STORE/experts/DATASET/MODEL."""

    dataset: str = option("builtin", "prepared dataset to train on (STORE/datasets/DATASET)", choices=dataset_names())
    num_experts: int | None = option(
        None,
        "trajectories wanted in all, existing ones kept (none: 30 for miniucf/ucf101/hmdb51, 20 for k400/ssv2, 4 "
        "for builtin, else 10)",
    )
    model: str = option(
        "minic3d",
        "expert network: minic3d (video) or convnet (image ConvNet on one random frame per clip)",
        choices=EXPERT_MODELS,
    )
    width: int = option(128, "channel width: convnet's width, minic3d's (w/2, w, w); 128 is the papers' networks")
    epochs: int = option(
        11, "epochs per trajectory (MTT: max_start_epoch 10 + expert_epochs 1); E epochs store E + 1 snapshots"
    )
    lr_teacher: float = option(0.01, "SGD learning rate of the experts")
    momentum: float = option(0.0, "SGD momentum (MTT's experts: 0)")
    weight_decay: float = option(0.0, "SGD weight decay")
    batch_size: int = option(256, "training batch size")
    dtype: str = option("float32", "stored parameter dtype (bfloat16 halves the shards)", choices=DTYPES)
    seed: int = option(0, "expert i uses seed + i")
    cpus_per_expert: float = option(1.0, "CPUs reserved by each expert's Ray task (its torch threads)")
    gpus_per_expert: float | None = option(
        None,
        "GPUs reserved by each expert's Ray task (fractions share a GPU); default: 0.25 when the Ray cluster has "
        "(or can launch) GPU nodes, else 0",
    )
    workers: int = option(
        0,
        "experts trained at once (0: as many as the cluster's CPUs and GPUs hold, with the nodes its autoscaler may "
        "launch)",
    )
    experiment: str = option("raydd-experts", "MLflow experiment name")
    plan: bool = option(
        False,
        "print the plan (memory per expert, bytes per node, Ray resources) and start nothing; "
        "with --ray-address or RAY_ADDRESS, refuse what that cluster cannot place",
    )

    def __post_init__(self) -> None:
        check_choice(self.dataset, "dataset", dataset_names())
        check(self.num_experts is None or self.num_experts >= 1, "num_experts", "a positive integer")
        for name in ("width", "epochs", "batch_size"):
            check(getattr(self, name) >= 1, name, "a positive integer")
        check(self.lr_teacher > 0, "lr_teacher", "a positive number")
        check(
            self.momentum >= 0 and self.weight_decay >= 0,
            "momentum" if self.momentum < 0 else "weight_decay",
            "0 or a positive number",
        )
        check(self.cpus_per_expert > 0, "cpus_per_expert", "a positive number")
        gpus = self.gpus_per_expert
        check(gpus is None or gpus >= 0, "gpus_per_expert", "0 or a positive number (fractions allowed)")
        check(self.workers >= 0, "workers", "0 (as many as fit) or a positive integer")

    def wanted(self) -> int:
        return self.num_experts or DEFAULT_EXPERTS.get(self.dataset, 10)


def settings_for(config: ExpertsConfig, dataset: PreparedDataset) -> ExpertSettings:
    options = model_options(config.model, config.width)
    spec = ModelSpec.of(
        config.model,
        num_classes=len(dataset.classes),
        clip_shape=dataset.manifest.metadata["clip_shape"],
        options=options,
    )
    return ExpertSettings(
        spec,
        dataset.manifest.content_sha256(),
        config.epochs,
        config.lr_teacher,
        config.momentum,
        config.weight_decay,
        config.batch_size,
        config.dtype,
        config.seed,
    )


def train_experts(config: ExpertsConfig) -> Manifest:
    """Train the experts STORE/experts/DATASET/MODEL lacks (up to :meth:`ExpertsConfig.wanted`) as Ray tasks,
    tracked in MLflow, and publish the manifest; a no-op when they are all there with these settings."""
    layout = StoreLayout.of(config.store)
    require_writable_root(layout.root)
    dataset = open_prepared(layout.dataset(config.dataset).uri)
    folder = layout.experts(config.dataset, config.model)
    settings = settings_for(config, dataset)
    done = published(folder, settings.to_dict())
    missing = [expert for expert in range(config.wanted()) if expert not in done]
    if not missing:
        print(
            f"{folder} already holds {len(done)} experts (asked for {config.wanted()}) with these settings: nothing "
            "to do",
            file=sys.stderr,
        )
        return read_manifest(folder)
    ensure_ray(config.ray_address)
    cluster = capacity()
    gpus = auto_gpus(config.gpus_per_expert, AUTO_GPUS_PER_EXPERT, cluster)
    threads = max(1, int(config.cpus_per_expert))
    calls = [(ExpertTask(e, settings, dataset.location.uri, folder.uri, config.device, threads),) for e in missing]
    tags = {"raydd.dataset": config.dataset, "raydd.dataset_manifest_sha256": settings.dataset_sha256}
    with mlflow_run(
        layout.root.uri, config.experiment, f"{config.model}-experts-{config.dataset}", to_dict(config), tags
    ) as tracker:
        started, results = time.perf_counter(), []
        try:
            for result in run_tasks(
                run_expert,
                calls,
                description=f"experts {config.model}",
                weights=[1] * len(calls),
                unit="expert",
                max_in_flight=config.workers or tasks_at_once(config.cpus_per_expert, gpus, cluster),
                num_cpus=config.cpus_per_expert,
                num_gpus=gpus,
            ):
                results.append(result)
                metrics.increment(metrics.EXPERTS_FINISHED_TOTAL, dataset=config.dataset, model=config.model)
        finally:
            if results:  # publish what finished, even when another expert failed
                manifest = experts_manifest(settings.to_dict(), [*done.values(), *(r.record for r in results)])
                write_manifest(folder, manifest)
        seconds = time.perf_counter() - started
        trained = sum(not r.reused for r in results)
        for r in results:
            tracker.log_metrics(
                {
                    f"expert{r.record.expert}/train_top1": 100 * r.record.train_accuracy,
                    f"expert{r.record.expert}/test_top1": 100 * r.record.test_accuracy,
                }
            )
        test_mean = 100 * statistics.fmean(r.record.test_accuracy for r in results)
        tracker.log_metrics(
            {
                "experts_trained": trained,
                "total_seconds": seconds,
                "trajectories_per_hour": trained * 3600 / seconds,
                "test_top1_mean": test_mean,
            }
        )
    print(
        f"experts {config.model} on {config.dataset}: {trained} trajectories of {config.epochs} epochs in "
        f"{seconds:.1f} s, "
        f"{trained * 3600 / seconds:.0f} trajectories/hour, test top-1 {test_mean:.1f} % (mean), "
        f"{sum(r.record.shard.bytes for r in results) / 1e6:.1f} MB ({len(results) - trained} reused, {len(done)} "
        f"already there) -> {folder}"
    )
    return manifest
