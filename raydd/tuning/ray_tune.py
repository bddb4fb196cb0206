"""The Ray Tune adapter of a sweep: Optuna proposes (lr_dynamic, lr_hal), ASHA stops trials whose
matching loss lags, every trial is an MLflow run nested under the sweep's (written by the driver:
:mod:`raydd.tuning.trial_runs`), Tune's state goes through raydd's own filesystem (s3fs on S3), and an
interrupted sweep resumes from its experiment folder.

Optuna sees each trial's final validation accuracy only (the objective); early stopping is ASHA's, on
the loss every trial reports as it goes, so that no evaluation is paid for in the middle of a trial.
Until its evaluation a trial reports the objective as NaN (Tune wants it in every result); a trial ASHA
stops keeps NaN, which Optuna records as a failed trial.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from raydd import faults
from raydd.locations import Location
from raydd.tuning.trial import TrialSpec, run_trial
from raydd.tuning.trial_runs import CURVE, CURVE_START, TrialRuns

OBJECTIVE = "val_top1"


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    num_samples: int
    max_concurrent: int
    lr_dynamic: tuple[float, float]  # log-uniform range
    lr_hal: tuple[float, float]
    starts: tuple[dict[str, float], ...]  # the first trials, in order (the sweep: the centre of the ranges)
    grace_period: int
    cpus_per_trial: float
    gpus_per_trial: float
    seed: int


@dataclasses.dataclass(frozen=True)
class TrialRow:
    trial_id: str
    lr_dynamic: float
    lr_hal: float
    loss: float
    iterations: int  # the last iteration it reported: below the preset's where ASHA stopped it
    val_top1: float  # nan where ASHA stopped the trial before its evaluation
    status: str


def _evaluated(result: dict[str, Any]) -> bool:
    return math.isfinite(result.get(OBJECTIVE, math.nan))


class _FinalOnlyOptuna(OptunaSearch):
    """Optuna's sampler without its pruning reports: intermediate results carry the loss, not the objective."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        return None


class _TrialRunsCallback(TrialRuns, tune.Callback):
    """:class:`TrialRuns` as Tune calls it."""


class _TrialsFinished(tune.Callback):
    """Counts the trials that finished with their evaluation: the position of the sweep's fault point."""

    def __init__(self, folder_uri: str) -> None:
        self.folder_uri, self.finished = folder_uri, 0  # a URI, not a Location: Tune pickles its callbacks

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += _evaluated(trial.last_result or {})
        faults.fire("interrupt_after_trials", self.finished, scope=self.folder_uri)


def _trial(config: dict[str, float], *, spec: TrialSpec, cpus: float) -> None:
    """One trial: reports to Tune only (the driver's :class:`TrialRuns` writes its MLflow run)."""
    torch.set_num_threads(max(1, int(cpus)))
    sent = 0

    def report(iteration: int, losses: list[float]) -> None:
        nonlocal sent
        curve, sent = losses[sent:], len(losses)
        tune.report(
            {
                "iteration": iteration,
                "loss": losses[-1],
                OBJECTIVE: math.nan,
                CURVE: curve,
                CURVE_START: sent - len(curve),
            }
        )

    result = run_trial(spec, config["lr_dynamic"], config["lr_hal"], report)
    tune.report(
        {
            "iteration": spec.stage.preset.iterations,
            "loss": result.losses[-1],
            OBJECTIVE: result.val_top1,
            "validation_clips": result.validation_clips,
            "seconds": result.seconds,
            CURVE: list(result.losses[sent:]),
            CURVE_START: sent,
        }
    )


def arrow_filesystem(location: Location) -> tuple[str, Any]:
    """``(path, filesystem)`` for Tune's ``storage_path`` / ``storage_filesystem``: a local folder as itself,
    anything else as raydd's own fsspec filesystem wrapped for pyarrow (as Ray Train's storage in
    :mod:`raydd.distill.ray_train`), so that S3 goes through s3fs with raydd's AWS settings, not pyarrow's client."""
    if location.is_local:
        os.makedirs(location.path, exist_ok=True)
        return location.path, None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return location.path.rstrip("/"), PyFileSystem(FSSpecHandler(location.fs))


def run_sweep(
    spec: TrialSpec,
    settings: SweepSettings,
    *,
    storage: Location,
    name: str,
    store: str,
    experiment: str,
    parent_run_id: str,
) -> list[TrialRow]:
    """Run (or resume) the sweep in ``storage/name``; returns every trial, best first."""
    trainable = tune.with_resources(
        tune.with_parameters(_trial, spec=spec, cpus=settings.cpus_per_trial),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    root, filesystem = arrow_filesystem(storage)  # raydd's own filesystem (s3fs on S3), as Ray Train's storage
    path = f"{root}/{name}"
    if tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        print(f"resuming the sweep in {storage.child(name)}", flush=True)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True, storage_filesystem=filesystem)
    else:
        searcher = _FinalOnlyOptuna(
            metric=OBJECTIVE, mode="max", points_to_evaluate=list(settings.starts), seed=settings.seed
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
                storage_path=root,
                storage_filesystem=filesystem,
                callbacks=[
                    _TrialRunsCallback(store, experiment, parent_run_id),
                    _TrialsFinished(storage.child(name).uri),
                ],
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
                int(metrics.get("iteration", 0)),
                metrics.get(OBJECTIVE, math.nan),
                status,
            )
        )
    return sorted(
        rows, key=lambda row: (math.isnan(row.val_top1), -row.val_top1 if not math.isnan(row.val_top1) else 0.0)
    )
