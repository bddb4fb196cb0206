"""The configuration of ``python -m raydd.tune``: one frozen dataclass, one flag per field."""

from __future__ import annotations

import dataclasses

from raydd.config import (
    DeviceSection,
    RaySection,
    SeedSection,
    StoreSection,
    TrackingSection,
    check,
    option,
    prefixed,
    to_dict,
)
from raydd.devices import DEVICE_CHOICES
from raydd.distill.settings import settings_hash
from raydd.evaluation.section import EvalSection, check_evaluation

# A trial's evaluation: one MiniC3D on its distilled set, scored on the validation clips, for the evaluation
# section's epochs; the default is the sweep's own, 100, so that a trial stays short (the schedule's is 500).
TrialEvalFlags = prefixed(EvalSection, "eval_", "TrialEvalFlags", only=("epochs",), defaults={"epochs": 100})


@dataclasses.dataclass(frozen=True)
class TuneConfig(StoreSection, RaySection, TrackingSection, DeviceSection, SeedSection, TrialEvalFlags):
    dataset: str = option("builtin", "prepared dataset (STORE/datasets/DATASET)")
    method: str = option("dm", "base method (static-dynamic paradigm)", choices=("dm", "mtt", "frepo"))
    ipc: int = option(1, "instances per class")
    num_samples: int = option(8, "trials of the sweep")
    max_concurrent: int = option(2, "trials running at once (each on --cpus-per-trial / --gpus-per-trial)")
    lr_dynamic_min: float | None = option(None, "lowest lr_dynamic tried (log-uniform; default: the preset's / 10)")
    lr_dynamic_max: float | None = option(None, "highest lr_dynamic tried (default: the preset's x 10)")
    lr_hal_min: float | None = option(None, "lowest lr_hal tried (default: the preset's / 10)")
    lr_hal_max: float | None = option(None, "highest lr_hal tried (default: the preset's x 10)")
    iterations: int | None = option(None, "iterations of stage 1 and of every trial's stage 2 (default: the preset's)")
    network_width: int | None = option(None, "width of the matching networks (default: the preset's)")
    batch_real: int | None = option(None, "real clips per class per matching sample (default: the preset's)")
    grace_period: int | None = option(
        None, "ASHA: iterations every trial runs before it may be stopped (default: a quarter)"
    )
    validation_fraction: float = option(0.2, "fraction of every class of the train split held out to score trials")
    cpus_per_trial: float = option(1.0, "CPUs reserved by each trial")
    gpus_per_trial: float | None = option(
        None,
        "GPUs reserved by each trial (fractions share a GPU); default: 0.5 when the Ray cluster has "
        "(or can launch) GPU nodes, else 0",
    )
    seed: int = option(0, "seed of the distillation, the validation split and the searcher")
    device: str = option("auto", "device of each trial", choices=DEVICE_CHOICES)
    experiment: str = option("raydd-tune", "MLflow experiment name")
    plan: bool = option(
        False,
        "print the plan (preset, memory per trial, bytes per node, Ray resources) and start nothing; "
        "with --ray-address or RAY_ADDRESS, refuse what that cluster cannot place",
    )

    def __post_init__(self) -> None:
        check_evaluation(self.unprefixed(), "eval_")
        check(self.eval_epochs is not None, "eval_epochs", "a positive integer")
        for name in ("ipc", "num_samples", "max_concurrent"):
            check(getattr(self, name) >= 1, name, "a positive integer")
        for name in ("iterations", "network_width", "batch_real", "grace_period"):
            check(getattr(self, name) is None or getattr(self, name) >= 1, name, "a positive integer")
        for name in ("lr_dynamic_min", "lr_dynamic_max", "lr_hal_min", "lr_hal_max"):
            check(getattr(self, name) is None or getattr(self, name) > 0, name, "a positive number")
        check(0 < self.validation_fraction < 1, "validation_fraction", "a number in (0, 1)")
        gpus = self.gpus_per_trial or 0
        name = "cpus_per_trial" if self.cpus_per_trial <= 0 else "gpus_per_trial"
        check(self.cpus_per_trial > 0 and gpus >= 0, name, "a positive number (GPUs: 0 or more)")

    def name(self) -> str:
        """The sweep's folder: the same settings name the same sweep, so a re-run resumes it."""
        ignored = ("num_samples", "max_concurrent", "ray_address", "store", "plan")
        settings = {k: v for k, v in to_dict(self).items() if k not in ignored}
        return f"{self.dataset}-{self.method}-ipc{self.ipc}-{settings_hash(settings)}"
