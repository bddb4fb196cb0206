"""The studies behind ``python -m raydd.analyse``: temporal (Sec. 3.3) and grouping (Suppl. 9.1) on a prepared
dataset, each logged (table as JSON and CSV, metrics, a PNG plot) to one MLflow run."""

from __future__ import annotations

import dataclasses

from raydd.analysis.grouping import run_grouping
from raydd.analysis.report import (
    Table,
    grouping_figure,
    grouping_metrics,
    grouping_summary,
    grouping_table,
    log_table,
    markdown,
    temporal_figure,
    temporal_metrics,
    temporal_table,
)
from raydd.analysis.study_config import GROUPING, TEMPORAL, AnalyseConfig
from raydd.analysis.temporal import frame_counts, run_temporal
from raydd.config import to_dict
from raydd.data.reader import PreparedDataset, open_prepared
from raydd.evaluation.protocols import PROTOCOL
from raydd.tracking import Tracker, mlflow_run


def _temporal(config: AnalyseConfig, dataset: PreparedDataset, tracker: Tracker) -> tuple[Table, str]:
    rows = run_temporal(config, dataset)
    tracker.log_series({f"frames{r.frames}/dm_loss": r.losses for r in rows})
    table = temporal_table(rows)
    log_table(tracker, TEMPORAL, table, temporal_figure(rows), temporal_metrics(table))
    setting = f"naive DM ({config.model}, IPC {config.ipc}, {config.iterations} iterations)"
    return table, f"{setting}; top-1 over {config.runs} runs, final epoch"


def _grouping(config: AnalyseConfig, dataset: PreparedDataset, tracker: Tracker) -> tuple[Table, str]:
    result = run_grouping(config, dataset)
    log_table(tracker, GROUPING, grouping_table(result), grouping_figure(result), grouping_metrics(result))
    return grouping_table(result), grouping_summary(result, config.runs)


@dataclasses.dataclass(frozen=True)
class Study:
    table: Table
    text: str  # the table in markdown, with what was run on what


def run_study(config: AnalyseConfig) -> Study:
    """Run ``config.study`` on ``config.data`` (default: the store's built-in dataset), logged to one MLflow run."""
    config = config.with_store_defaults()
    dataset = open_prepared(config.data)
    if config.study == TEMPORAL:  # a bad --frames fails here, before any MLflow run is opened
        frame_counts(config.frames, int(dataset.manifest.metadata["clip_shape"][0]))
    tags = {"raydd.dataset": dataset.spec.name, "raydd.dataset_manifest_sha256": dataset.manifest.content_sha256()}
    tags["raydd.protocol"] = PROTOCOL.name  # every evaluated model: raydd's evaluation protocol
    name = f"{config.study}-{dataset.spec.name}"
    with mlflow_run(config.store, config.experiment, name, to_dict(config), tags) as tracker:
        table, footer = {TEMPORAL: _temporal, GROUPING: _grouping}[config.study](config, dataset, tracker)
    return Study(
        table, f"\n{config.study} study on {dataset.spec.name} ({dataset.location}):\n{markdown(table)}\n{footer}"
    )
