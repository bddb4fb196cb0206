"""The Ray Tune adapter of a sweep: Optuna proposes (lr_dynamic, lr_hal), ASHA stops trials whose
matching loss lags, every trial is an MLflow run nested under the sweep's, and an interrupted sweep
resumes from its experiment folder.

Optuna sees each trial's final validation accuracy only (the objective); early stopping is ASHA's, on
the loss every trial reports as it goes, so that no evaluation is paid for in the middle of a trial.
Until its evaluation a trial reports the objective as NaN (Tune wants it in every result); a trial ASHA
stops keeps NaN, which Optuna records as a failed trial.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
from typing import Any

import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from raydd.storage import exists, resolve, write_bytes
from raydd.tracking import mlflow_run
from raydd.tuning.trial import TrialSpec, run_trial

OBJECTIVE = "val_top1"


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    num_samples: int
    max_concurrent: int
    lr_dynamic: tuple[float, float]  # log-uniform range
    lr_hal: tuple[float, float]
    start: dict[str, float]  # the first trial: the preset's values
    grace_period: int
    cpus_per_trial: float
    gpus_per_trial: float
    seed: int
    interrupt_after_trials: int = -1  # raydd.faults: stop the first attempt after this many trials


@dataclasses.dataclass(frozen=True)
class TrialRow:
    trial_id: str
    lr_dynamic: float
    lr_hal: float
    loss: float
    val_top1: float  # nan where ASHA stopped the trial before its evaluation
    status: str


def _evaluated(result: dict[str, Any]) -> bool:
    return math.isfinite(result.get(OBJECTIVE, math.nan))


class _FinalOnlyOptuna(OptunaSearch):
    """Optuna's sampler without its pruning reports: intermediate results carry the loss, not the objective."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        return None


class _InterruptOnce(tune.Callback):
    """Testing aid: the first attempt of a sweep is interrupted once ``after`` trials have finished, by
    the signal that Tune handles as it handles Ctrl-C (it saves the experiment's state and returns)."""

    def __init__(self, after: int, marker_uri: str) -> None:
        self.after, self.marker_uri, self.finished = after, marker_uri, 0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += _evaluated(trial.last_result or {})
        if 0 <= self.after <= self.finished and not exists(resolve(self.marker_uri)):
            write_bytes(resolve(self.marker_uri), b"interrupted once\n")
            os.kill(os.getpid(), signal.SIGUSR1)


def _trial(
    config: dict[str, float], *, spec: TrialSpec, store: str, experiment: str, parent_run_id: str, cpus: float
) -> None:
    torch.set_num_threads(max(1, int(cpus)))
    trial_id = tune.get_context().get_trial_id()
    params = {"lr_dynamic": config["lr_dynamic"], "lr_hal": config["lr_hal"]}
    tags = {"mlflow.parentRunId": parent_run_id, "raydd.trial_id": trial_id}
    with mlflow_run(store, experiment, f"trial-{trial_id}", params, tags) as tracker:
        result = run_trial(
            spec,
            config["lr_dynamic"],
            config["lr_hal"],
            lambda i, loss: tune.report({"iteration": i, "loss": loss, OBJECTIVE: math.nan}),
            tracker,
        )
    # Outside the MLflow block: Tune may end this process as soon as it has the final result.
    tune.report(
        {
            "iteration": spec.stage.preset.iterations,
            "loss": result.losses[-1],
            OBJECTIVE: result.val_top1,
            "seconds": result.seconds,
        }
    )


def run_sweep(
    spec: TrialSpec,
    settings: SweepSettings,
    *,
    storage: str,
    name: str,
    store: str,
    experiment: str,
    parent_run_id: str,
) -> list[TrialRow]:
    """Run (or resume) the sweep in ``storage/name``; returns every trial, best first."""
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial,
            spec=spec,
            store=store,
            experiment=experiment,
            parent_run_id=parent_run_id,
            cpus=settings.cpus_per_trial,
        ),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    path = f"{storage}/{name}"
    if tune.Tuner.can_restore(path):
        print(f"resuming the sweep in {path}", flush=True)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        searcher = _FinalOnlyOptuna(
            metric=OBJECTIVE, mode="max", points_to_evaluate=[settings.start], seed=settings.seed
        )
        iterations = spec.stage.preset.iterations
        scheduler = ASHAScheduler(
            time_attr="iteration",
            metric="loss",
            mode="min",
            max_t=iterations,
            grace_period=min(settings.grace_period, iterations),
        )
        tuner = tune.Tuner(
            trainable,
            param_space={
                "lr_dynamic": tune.loguniform(*settings.lr_dynamic),
                "lr_hal": tune.loguniform(*settings.lr_hal),
            },
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, settings.max_concurrent),
                scheduler=scheduler,
                num_samples=settings.num_samples,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                callbacks=[_InterruptOnce(settings.interrupt_after_trials, f"{path}/interrupt-marker")],
                verbose=1,
            ),
        )
    grid = tuner.fit()
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        config = result.config or {}
        status = "ERROR" if result.error else ("DONE" if _evaluated(metrics) else "STOPPED")
        rows.append(
            TrialRow(
                metrics.get("trial_id", "?"),
                config.get("lr_dynamic", math.nan),
                config.get("lr_hal", math.nan),
                metrics.get("loss", math.nan),
                metrics.get(OBJECTIVE, math.nan),
                status,
            )
        )
    return sorted(
        rows, key=lambda row: (math.isnan(row.val_top1), -row.val_top1 if not math.isnan(row.val_top1) else 0.0)
    )
