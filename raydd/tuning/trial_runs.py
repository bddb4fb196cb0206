"""Every trial's MLflow run, written by the sweep's driver alone: the bookkeeping of a Ray Tune callback
(:mod:`raydd.tuning.ray_tune` mixes it into ``tune.Callback``; this module imports no Ray).

Trials only report to Tune; this callback turns what they report into child runs of the sweep's parent run.
Nothing in a trial's process talks to MLflow, so a sweep of many trials is not many processes each holding an
HTTP connection to the tracking server. Each report carries the loss of every iteration since the previous
one (``loss_curve`` from step ``curve_start``); the callback keeps them and sends a trial's curve in batches
(:meth:`raydd.tracking.MlflowTracker.log_series`, MLflow's ``log_batch``) at most every
:data:`FLUSH_EVERY_S` seconds, and the rest when the trial ends.

A resumed sweep logs a trial it restarts into the run that trial already had: the run is found in the tracking
store by its ``raydd.trial_id`` tag under the sweep's parent run. (State saved with Tune's experiment would lag:
a driver killed between a trial's first report and the next experiment checkpoint left a trial whose run the
resumed sweep did not know, and it got a second child run.)
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

from raydd.tracking import PARENT_TAG, MlflowTracker, mlflow_run, tagged_child_run

FLUSH_EVERY_S = 30.0
CURVE, CURVE_START = "loss_curve", "curve_start"
FINAL_METRICS = ("val_top1", "validation_clips", "seconds")
TRIAL_TAG = "raydd.trial_id"


class TrialRuns:
    """MLflow child runs of ``parent_run_id`` for the trials of a sweep, from the driver, in batches."""

    def __init__(self, store: str, experiment: str, parent_run_id: str) -> None:
        self.store, self.experiment, self.parent_run_id = store, experiment, parent_run_id
        self._open: dict[str, tuple[contextlib.ExitStack, MlflowTracker]] = {}
        self._curves: dict[str, tuple[int, list[float]]] = {}  # trial id -> (first step, losses not yet sent)
        self._sent_at: dict[str, float] = {}

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the experiment
        return {"store": self.store, "experiment": self.experiment, "parent_run_id": self.parent_run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], state["experiment"], state["parent_run_id"])

    def _tracker(self, trial: Any) -> MlflowTracker:  # noqa: ANN401 - Tune's Trial
        trial_id = trial.trial_id
        if trial_id not in self._open:
            stack = contextlib.ExitStack()
            config = trial.config or {}
            tracker = stack.enter_context(
                mlflow_run(
                    self.store,
                    self.experiment,
                    f"trial-{trial_id}",
                    {key: config[key] for key in ("lr_dynamic", "lr_hal") if key in config},
                    {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial_id},
                    resume_run_id=tagged_child_run(
                        self.store, self.experiment, self.parent_run_id, TRIAL_TAG, trial_id
                    ),
                )
            )
            self._open[trial_id] = (stack, tracker)
            self._sent_at[trial_id] = time.monotonic()
        return self._open[trial_id][1]

    def _keep(self, trial_id: str, result: dict[str, Any]) -> None:
        curve = result.get(CURVE) or []
        if not curve:
            return
        start, kept = self._curves.get(trial_id, (int(result[CURVE_START]), []))
        if start + len(kept) != int(result[CURVE_START]):  # a restarted trial: its curve begins again
            self._flush(trial_id)
            start, kept = int(result[CURVE_START]), []
        self._curves[trial_id] = (start, [*kept, *map(float, curve)])

    def _flush(self, trial_id: str) -> None:
        start, kept = self._curves.pop(trial_id, (0, []))
        if kept:
            self._open[trial_id][1].log_series({"loss": kept}, start=start)
        self._sent_at[trial_id] = time.monotonic()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._tracker(trial)
        self._keep(trial.trial_id, result)
        if time.monotonic() - self._sent_at[trial.trial_id] >= FLUSH_EVERY_S:
            self._flush(trial.trial_id)

    def _close(self, trial: Any, error: bool) -> None:  # noqa: ANN401 - Tune's Trial
        tracker = self._tracker(trial)
        self._flush(trial.trial_id)
        final = {k: float(v) for k, v in (trial.last_result or {}).items() if k in FINAL_METRICS}
        final = {k: v for k, v in final.items() if math.isfinite(v)}
        if final:
            tracker.log_metrics(final)
        self._end(trial.trial_id, failed=error)

    def _end(self, trial_id: str, failed: bool) -> None:
        stack, _ = self._open.pop(trial_id)
        if failed:  # mlflow_run ends the run FAILED when its block raises
            stack.__exit__(RuntimeError, RuntimeError(f"trial {trial_id} did not finish"), None)
        else:
            stack.close()  # ends FINISHED

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, error=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """An interrupted sweep: send what is kept and end the runs of unfinished trials FAILED (a resume
        that restarts such a trial sets its run RUNNING again)."""
        for trial_id in list(self._open):
            self._flush(trial_id)
            self._end(trial_id, failed=True)
