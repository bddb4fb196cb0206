"""The sweep behind ``python -m raydd.tune``: stage 1 once, then Ray Tune's trials (:mod:`raydd.tuning.ray_tune`),
each a stage 2 with its own ``lr_dynamic`` and ``lr_hal`` and a short evaluation on validation clips; the best
trial written as a preset file (STORE/tune/NAME/best_preset.json). The parent MLflow run and Tune's state live in
the sweep's folder, so the same config resumes an interrupted sweep.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from raydd.cluster import capacity
from raydd.config import to_dict
from raydd.data.reader import open_prepared
from raydd.distill.methods.catalog import method_info
from raydd.distill.presets import Preset, table_preset
from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import RunPresets, resolve_presets
from raydd.distill.stages import DYNAMIC, STATIC, StageSpec
from raydd.errors import RayddError
from raydd.layout import StoreLayout, default_store
from raydd.parallel import ensure_ray, run_tasks
from raydd.planning.tasks import plan_tune
from raydd.resources import AUTO_GPUS_PER_TRIAL, auto_gpus
from raydd.storage import exists, read_bytes, write_bytes
from raydd.tracking import mlflow_run
from raydd.tuning.ray_tune import SweepSettings, TrialRow, run_sweep
from raydd.tuning.sweep_config import TuneConfig
from raydd.tuning.trial import TrialSpec, fit_static


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
    store = config.store or default_store()
    fields = {"dataset": config.dataset, "method": config.method, "ipc": config.ipc, "store": store}
    return DistillConfig(**fields, **lrs, **overrides)


def sweep_presets(config: TuneConfig) -> RunPresets:
    """The sweep's presets, resolved once at the command's edge: ``run`` is the preset every trial starts from (its
    lr_dynamic and lr_hal are the sweep's), ``stage1`` the one stage 1 runs."""
    return resolve_presets(_distill_config(config, lr_dynamic=1.0, lr_hal=1.0))


def _centre(config: TuneConfig, presets: RunPresets) -> Preset | None:
    """The preset whose lr_dynamic and lr_hal the sweep's ranges centre on: the table's, or the borrowed row's."""
    if presets.borrowed is not None:
        return Preset(**presets.borrowed.fields)
    return table_preset(config.method, "static-dynamic", config.dataset, config.ipc)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    rows: tuple[TrialRow, ...]  # every trial, best first
    best_preset: str  # URI of the preset file of the best trial
    validation_fraction: float

    def summary(self) -> str:
        """The trials' table and where the best preset went."""
        lines = [f"{'trial':>12} {'lr_dynamic':>11} {'lr_hal':>11} {'iters':>6} {'loss':>10} {'val top-1':>9}  status"]
        lines += [
            f"{row.trial_id:>12} {row.lr_dynamic:11.4g} {row.lr_hal:11.4g} {row.iterations:6d} {row.loss:10.5g} "
            f"{row.val_top1:9.1f}  {row.status}"
            for row in self.rows
        ]
        best = self.rows[0]
        lines.append(
            f"best preset ({best.val_top1:.1f} % on {self.validation_fraction:.0%} of the train split) -> "
            f"{self.best_preset}"
        )
        return "\n".join(lines)


def tune(config: TuneConfig, presets: RunPresets, starts: Sequence[Mapping[str, float]] = ()) -> SweepResult:
    """Run (or resume) the sweep of ``config`` with its :func:`sweep_presets`; stage 1 only if the sweep's folder
    lacks its still images. ``starts``: (lr_dynamic, lr_hal) points tried first, in order (default: the centre of
    the ranges)."""
    config = dataclasses.replace(config, store=config.store or default_store())  # where the runs are logged
    preset = presets.run
    centre = _centre(config, presets)
    lr_dynamic = _range(config.lr_dynamic_min, config.lr_dynamic_max, centre and centre.lr_dynamic, "lr_dynamic")
    lr_hal = _range(config.lr_hal_min, config.lr_hal_max, centre and centre.lr_hal, "lr_hal")
    start = {"lr_dynamic": math.sqrt(lr_dynamic[0] * lr_dynamic[1]), "lr_hal": math.sqrt(lr_hal[0] * lr_hal[1])}
    bounds = {"lr_dynamic": lr_dynamic, "lr_hal": lr_hal}
    for point in starts:
        if set(point) != set(bounds) or not all(bounds[k][0] <= v <= bounds[k][1] for k, v in point.items()):
            raise RayddError(f"starting point {dict(point)}: give lr_dynamic and lr_hal inside the ranges {bounds}")
    layout = StoreLayout.of(config.store)
    dataset = open_prepared(layout.dataset(config.dataset).uri)
    name, folder = config.name(), layout.tune(config.name())
    uses_experts = method_info(config.method).needs_experts
    experts = lambda model: layout.experts(config.dataset, model).uri if uses_experts else None  # noqa: E731
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
    static_method = presets.stage1_method
    static = dataclasses.replace(
        base,
        method=static_method,
        preset=presets.stage1,
        experts_uri=layout.experts(config.dataset, "convnet").uri if method_info(static_method).needs_experts else None,
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
        tuple(dict(point) for point in starts) or (start,),
        grace,
        config.cpus_per_trial,
        gpus,
        config.seed,
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
            storage=layout.tune(),
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
    return SweepResult(tuple(rows), folder.child("best_preset.json").uri, config.validation_fraction)


def plan_text(config: TuneConfig, presets: RunPresets) -> str:
    """The sweep's plan, starting nothing; refuses what a given cluster cannot place."""
    from raydd.planning.report import format_tasks

    return format_tasks(plan_tune(config, presets.run, capacity(config.ray_address)))
