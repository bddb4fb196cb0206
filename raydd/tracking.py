"""Experiment tracking: MLflow behind a small :class:`Tracker` protocol.

Components receive a ``Tracker`` and never import MLflow. The tracking URI is
``MLFLOW_TRACKING_URI`` when set (a cluster points every run at one MLflow server), else a SQLite
file in the command's store (:meth:`raydd.layout.StoreLayout.mlflow_db`). Only the driver / rank 0 logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from raydd.errors import RayddError
from raydd.provenance import driver_alive, driver_id, git_commit

_PARAM_LIMIT = 6000  # MLflow's limit on one parameter value
SETTINGS_HASH_TAG = "raydd.settings_hash"  # what a run computes; a re-run of a killed driver continues its run
DRIVER_TAG = "raydd.driver"  # host:pid of the process that has the run open
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI shows the run nested under that one


class Tracker(Protocol):
    """What components may log. Implementations: :class:`MlflowTracker`, :class:`NullTracker`."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_series(self, series: Mapping[str, Sequence[float]], start: int = 0) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_dict(self, data: Mapping[str, Any], name: str) -> None: ...
    def log_artifact(self, path: str) -> None: ...


class NullTracker:
    """Logs nothing (non-zero ranks, library use without tracking)."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_series(self, series: Mapping[str, Sequence[float]], start: int = 0) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_dict(self, data: Mapping[str, Any], name: str) -> None: ...
    def log_artifact(self, path: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class RunAddress:
    """Where an open MLflow run lives: picklable, so that a Ray worker can log into the driver's run while
    the work runs (a stage's loss curve, live) instead of only when it returns."""

    tracking_uri: str
    run_id: str

    @property
    def machine_local(self) -> bool:
        """A SQLite file or a local folder (``sqlite:``, ``file:``, a bare path): only processes on the machine
        that opened the run reach it. On another node of a cluster the same path names a file on another disk,
        where MLflow would make a new, empty store and fail to find the run."""
        scheme = urlparse(self.tracking_uri).scheme
        return scheme in ("file", "sqlite") or (not scheme and self.tracking_uri != "databricks")

    def open(self) -> MlflowTracker:
        from mlflow import MlflowClient

        return MlflowTracker(MlflowClient(tracking_uri=self.tracking_uri), self.run_id)


def tracking_uri(store: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set; else SQLite in the store (STORE/mlflow.db) when it is local. A remote
    store cannot hold SQLite: then the default store's (``$RAYDD_STORE``) if local, else ./raydd-store's."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from raydd.layout import FALLBACK_STORE, StoreLayout, default_store

    local = next(
        layout for layout in map(StoreLayout.of, (store, default_store(), FALLBACK_STORE)) if layout.root.is_local
    )
    database = local.mlflow_db()
    folder = Path(database.path).parent.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder}/{database.name}"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b": "value"}`` strings, as MLflow params. ``None`` (a flag left unset: its default
    is resolved elsewhere) is left out rather than logged as "null"."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple, bool)) else str(value)
            flat[name] = text[:_PARAM_LIMIT]
    return flat


class MlflowTracker:
    """A :class:`Tracker` writing to the active MLflow run of an :class:`mlflow.MlflowClient`."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @property
    def address(self) -> RunAddress:
        return RunAddress(self.client.tracking_uri, self.run_id)

    def series_length(self, key: str) -> int:
        """Points of metric ``key`` already in the run."""
        return len(self.client.get_metric_history(self.run_id, key))

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(key, value) for key, value in flat.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=items)

    def log_series(self, series: Mapping[str, Sequence[float]], start: int = 0) -> None:
        """Curves (value i at step ``start`` + i), in batches of MLflow's 1000-metric limit: a stage's
        thousands of iterations are a few requests, not one per iteration."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(key, float(value), now, step)
            for key, values in series.items()
            for step, value in enumerate(values, start)
        ]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self.client.log_dict(self.run_id, dict(data), name)

    def log_artifact(self, path: str) -> None:
        self.client.log_artifact(self.run_id, path)


@contextlib.contextmanager
def mlflow_run(
    store: str | None,
    experiment: str,
    run_name: str,
    config: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
    *,
    resume_run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    settings_hash: str | None = None,
) -> Iterator[MlflowTracker]:
    """One MLflow run: logs the config (``config.json``, and as params unless ``params`` are given), the git
    commit and ``tags``; ends FINISHED, or FAILED if the block raises. ``resume_run_id``: continue that run (a
    resumed sweep's parent run) instead of creating one; its params are not logged again. ``parent_run_id``:
    the run is nested under that one. ``settings_hash``: tagged; a run with the same hash left RUNNING by a
    driver that is gone (killed) is continued instead of a new one being created."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(store)
    client = MlflowClient(tracking_uri=uri)
    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else client.create_experiment(experiment, artifact_location=_artifact_root(uri, experiment))
        )
    except mlflow.exceptions.MlflowException as error:
        raise RayddError(f"cannot use the MLflow tracking store {uri} ({error}): check MLFLOW_TRACKING_URI") from None
    if resume_run_id is None and settings_hash is not None:
        resume_run_id = killed_run(client, experiment_id, settings_hash)
    commit, dirty = git_commit()
    own = {"raydd.command": " ".join(sys.argv), DRIVER_TAG: driver_id()}
    if resume_run_id is not None:
        client.update_run(resume_run_id, status="RUNNING")
        run = client.get_run(resume_run_id)
        tracker = MlflowTracker(client, run.info.run_id)
        attempts = int(run.data.tags.get("raydd.attempts", "1")) + 1
        tracker.set_tags({**own, "raydd.attempts": str(attempts)})
        if settings_hash is not None:
            print(f"mlflow: continuing run {run.info.run_id} (its driver is gone; attempt {attempts})", flush=True)
    else:
        first = {"raydd.git_commit": commit, "raydd.git_dirty": dirty, **own, **(tags or {})}
        if settings_hash is not None:
            first[SETTINGS_HASH_TAG] = settings_hash
        if parent_run_id is not None:
            first[PARENT_TAG] = parent_run_id
        run = client.create_run(experiment_id, run_name=run_name, tags=first)
        tracker = MlflowTracker(client, run.info.run_id)
        tracker.log_params(config if params is None else params)
        tracker.log_dict(config, "config.json")
    try:
        yield tracker
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")


def killed_run(client: Any, experiment_id: str, settings_hash: str) -> str | None:
    """The newest run of ``settings_hash`` still RUNNING whose driver process is gone, if any."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SETTINGS_HASH_TAG}` = '{settings_hash}' and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"],
    )
    gone = [run for run in runs if not driver_alive(run.data.tags.get(DRIVER_TAG, ""))]
    if not gone:
        return None
    run_id = gone[0].info.run_id
    # Runs it had open when killed (the closing evaluation) are over: the continued run opens its own.
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run_id}' and attributes.status = 'RUNNING'"
    )
    for child in children:
        client.set_terminated(child.info.run_id, status="KILLED")
    return run_id


def tagged_child_run(store: str | None, experiment: str, parent_run_id: str, tag: str, value: str) -> str | None:
    """The newest child run of ``parent_run_id`` tagged ``tag = value``, if any: how a resumed sweep finds the run
    a trial already has, from the tracking store itself rather than from state saved beside it (which may lag)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(store))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{tag}` = '{value}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def end_killed_run(store: str | None, experiment: str, settings_hash: str, why: str) -> str | None:
    """Mark KILLED the run of ``settings_hash`` that a killed driver left RUNNING, when there is nothing left for a
    re-run to continue (its output is complete); ``why`` is tagged. Returns its id, or None when there is none."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri(store))
    try:
        found = client.get_experiment_by_name(experiment)
        run_id = killed_run(client, found.experiment_id, settings_hash) if found is not None else None
        if run_id is not None:
            client.set_tag(run_id, "raydd.ended", why)
            client.set_terminated(run_id, status="KILLED")
    except MlflowException:  # nothing to do but this: an unreachable tracking server must not fail the command
        return None
    return run_id


def _artifact_root(uri: str, experiment: str) -> str | None:
    """Artifacts beside a SQLite store (mlartifacts/<experiment>); a server decides its own."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).parent.joinpath("mlartifacts", experiment).as_uri()
    return None
