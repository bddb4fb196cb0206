"""``python -m raydd.tune``: sweep stage 2's ``lr_dynamic`` and ``lr_hal`` with Ray Tune (Optuna + ASHA).

Stage 1 runs once and every trial's stage 2 starts from its images; each trial ends with a short
evaluation on validation clips held out of the train split. The best trial becomes a preset file
(STORE/tune/NAME/best_preset.json) that ``python -m raydd.distill --preset FILE`` reads as is.
Running the same command again resumes an interrupted sweep.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from raydd.cluster import capacity
from raydd.config import check, option, run_command, to_dict
from raydd.data.reader import open_prepared
from raydd.devices import DEVICE_CHOICES
from raydd.distill.methods.catalog import method_info
from raydd.distill.presets import Preset, table_preset
from raydd.distill.settings import DistillConfig, settings_hash
from raydd.distill.stages import DYNAMIC, STATIC, StageSpec
from raydd.errors import RayddError
from raydd.parallel import ensure_ray, run_tasks
from raydd.planning.tasks import AUTO_GPUS_PER_TRIAL, auto_gpus, plan_tune
from raydd.prepare import DEFAULT_STORE
from raydd.storage import exists, read_bytes, resolve, write_bytes
from raydd.tracking import mlflow_run
from raydd.tuning.ray_tune import SweepSettings, TrialRow, run_sweep
from raydd.tuning.trial import TrialSpec, fit_static


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    dataset: str = option("builtin", "prepared dataset (STORE/datasets/DATASET)")
    method: str = option("dm", "base method (static-dynamic paradigm)", choices=("dm", "mtt", "frepo"))
    ipc: int = option(1, "instances per class")
    store: str = option(DEFAULT_STORE, "store URI: reads datasets/ (and experts/), writes tune/NAME and mlflow.db")
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
    eval_epochs: int = option(100, "epochs of each trial's evaluation (MiniC3D on the distilled set)")
    cpus_per_trial: float = option(1.0, "CPUs reserved by each trial")
    gpus_per_trial: float | None = option(
        None,
        "GPUs reserved by each trial (fractions share a GPU); default: 0.5 when the Ray cluster has "
        "(or can launch) GPU nodes, else 0",
    )
    seed: int = option(0, "seed of the distillation, the validation split and the searcher")
    device: str = option("auto", "device of each trial", choices=DEVICE_CHOICES)
    experiment: str = option("raydd-tune", "MLflow experiment name")
    ray_address: str | None = option(None, "Ray cluster to join (default: RAY_ADDRESS, else a new local cluster)")
    plan: bool = option(
        False,
        "print the plan (preset, memory per trial, bytes per node, Ray resources) and start nothing; "
        "with --ray-address or RAY_ADDRESS, refuse what that cluster cannot place",
    )
    interrupt_after_trials: int = option(
        -1, "testing aid: the first attempt of the sweep stops as if interrupted once this many trials finished"
    )

    def __post_init__(self) -> None:
        for name in ("ipc", "num_samples", "max_concurrent", "eval_epochs"):
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
        ignored = ("num_samples", "max_concurrent", "ray_address", "interrupt_after_trials", "store", "plan")
        settings = {k: v for k, v in to_dict(self).items() if k not in ignored}
        return f"{self.dataset}-{self.method}-ipc{self.ipc}-{settings_hash(settings)}"


def _range(low: float | None, high: float | None, centre: float | None, flag: str) -> tuple[float, float]:
    if centre is None and (low is None or high is None):
        raise RayddError(
            f"no preset gives {flag} here: pass --{flag.replace('_', '-')}-min and --{flag.replace('_', '-')}-max"
        )
    low, high = low or centre / 10, high or centre * 10
    if not low < high:
        raise RayddError(
            f"--{flag.replace('_', '-')}-min ({low:g}) must be below --{flag.replace('_', '-')}-max ({high:g})"
        )
    return low, high


def _distill_config(config: TuneConfig, **lrs: float) -> Any:  # noqa: ANN401
    overrides = {k: getattr(config, k) for k in ("iterations", "network_width", "batch_real")}
    fields = {"dataset": config.dataset, "method": config.method, "ipc": config.ipc, "store": config.store}
    return DistillConfig(**fields, **lrs, **overrides)


def base_preset(config: TuneConfig) -> Preset:
    """The preset every trial starts from (its lr_dynamic and lr_hal are the sweep's)."""
    return _distill_config(config, lr_dynamic=1.0, lr_hal=1.0).resolved_preset()


def _centre(config: TuneConfig) -> Preset | None:
    """The preset whose lr_dynamic and lr_hal the sweep's ranges centre on: the table's, or the borrowed row's."""
    table = table_preset(config.method, "static-dynamic", config.dataset, config.ipc)
    borrowed = None if table is not None else _distill_config(config).borrowed()
    return table if borrowed is None else Preset(**borrowed.fields)


def tune(config: TuneConfig) -> list[TrialRow]:
    preset = base_preset(config)
    centre = _centre(config)
    stage1 = _distill_config(config, lr_dynamic=1.0, lr_hal=1.0)
    lr_dynamic = _range(config.lr_dynamic_min, config.lr_dynamic_max, centre and centre.lr_dynamic, "lr_dynamic")
    lr_hal = _range(config.lr_hal_min, config.lr_hal_max, centre and centre.lr_hal, "lr_hal")
    start = {"lr_dynamic": math.sqrt(lr_dynamic[0] * lr_dynamic[1]), "lr_hal": math.sqrt(lr_hal[0] * lr_hal[1])}
    store = resolve(config.store)
    dataset = open_prepared(store.child("datasets", config.dataset).uri)
    name, folder = config.name(), store.child("tune", config.name())
    uses_experts = method_info(config.method).needs_experts
    experts = lambda model: store.child("experts", config.dataset, model).uri if uses_experts else None  # noqa: E731
    base = StageSpec(
        stage=STATIC,
        method=config.method,
        dataset_uri=dataset.location.uri,
        ipc=config.ipc,
        preset=preset,
        seed=config.seed,
        device=config.device,
        experts_uri=experts("convnet"),
    )
    static_method = stage1.stage1_method()
    static = dataclasses.replace(
        base,
        method=static_method,
        preset=stage1.static_preset(),
        experts_uri=store.child("experts", config.dataset, "convnet").uri
        if method_info(static_method).needs_experts
        else None,
    )
    trial = TrialSpec(
        stage=dataclasses.replace(
            base, stage=DYNAMIC, static_uri=folder.child("static").uri, experts_uri=experts("minic3d")
        ),
        validation_fraction=config.validation_fraction,
        eval_epochs=config.eval_epochs,
        report_every=max(1, preset.iterations // 20),
    )
    ensure_ray(config.ray_address)
    gpus = auto_gpus(config.gpus_per_trial, AUTO_GPUS_PER_TRIAL, capacity())
    if exists(folder.child("static", "manifest.json")):
        print(f"stage 1: reusing the still images at {folder.child('static')}", flush=True)
    else:
        train_indices, _ = trial.split()
        calls = [(static, train_indices, folder.child("static").uri)]
        needs = {"num_cpus": config.cpus_per_trial, "num_gpus": gpus}
        list(run_tasks(fit_static, calls, description="stage 1", weights=[1], unit="stage", max_in_flight=1, **needs))
    parent_file = folder.child("mlflow_parent_run")
    parent_id = read_bytes(parent_file).decode() if exists(parent_file) else None
    grace = config.grace_period or max(1, preset.iterations // 4)
    settings = SweepSettings(
        config.num_samples,
        config.max_concurrent,
        lr_dynamic,
        lr_hal,
        start,
        grace,
        config.cpus_per_trial,
        gpus,
        config.seed,
        config.interrupt_after_trials,
    )
    with mlflow_run(
        config.store,
        config.experiment,
        name,
        to_dict(config),
        {"raydd.dataset": config.dataset, "raydd.sweep": name},
        resume_run_id=parent_id,
    ) as tracker:
        write_bytes(parent_file, tracker.run_id.encode())
        rows = run_sweep(
            trial,
            settings,
            storage=str(store.child("tune").uri),
            name=name,
            store=config.store,
            experiment=config.experiment,
            parent_run_id=tracker.run_id,
        )
        if len(rows) < config.num_samples or any(row.status == "ERROR" for row in rows):
            raise RayddError(
                f"the sweep stopped with {sum(r.status != 'ERROR' for r in rows)} of {config.num_samples} trials "
                "finished: re-run the same command to resume it"
            )
        best = rows[0]
        if math.isnan(best.val_top1):
            raise RayddError("no trial reached its evaluation: widen --grace-period or the lr ranges")
        chosen = dataclasses.replace(preset, lr_dynamic=best.lr_dynamic, lr_hal=best.lr_hal)
        sweep = {
            "name": name,
            "dataset": config.dataset,
            "method": config.method,
            "ipc": config.ipc,
            "val_top1": best.val_top1,
            "trial_id": best.trial_id,
            "static_uri": folder.child("static").uri,
            "trials": len(rows),
        }
        write_bytes(
            folder.child("best_preset.json"),
            json.dumps({"preset": chosen.to_dict(), "sweep": sweep}, indent=2, sort_keys=True).encode(),
        )
        tracker.log_metrics(
            {"best/val_top1": best.val_top1, "best/lr_dynamic": best.lr_dynamic, "best/lr_hal": best.lr_hal}
        )
        tracker.set_tags({"raydd.best_preset": folder.child("best_preset.json").uri})
    print(f"{'trial':>12} {'lr_dynamic':>11} {'lr_hal':>11} {'loss':>10} {'val top-1':>9}  status")
    for row in rows:
        print(
            f"{row.trial_id:>12} {row.lr_dynamic:11.4g} {row.lr_hal:11.4g} {row.loss:10.5g} {row.val_top1:9.1f}  "
            f"{row.status}"
        )
    print(
        f"best preset ({best.val_top1:.1f} % on {config.validation_fraction:.0%} of the train split) -> "
        f"{folder.child('best_preset.json')}"
    )
    return rows


def show_plan(config: TuneConfig) -> None:
    """Print the plan and start nothing; refuses what a given cluster cannot place."""
    from raydd.planning.report import format_tasks

    print(format_tasks(plan_tune(config, base_preset(config), capacity(config.ray_address))))


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(
        TuneConfig,
        lambda config: show_plan(config) if config.plan else tune(config),
        argv,
        "raydd.tune",
        "Sweep stage 2's lr_dynamic and lr_hal with Ray Tune; write the best as a preset file.",
    )


if __name__ == "__main__":
    sys.exit(main())
