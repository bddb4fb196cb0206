"""``python -m raydd.analyse --study {temporal,grouping}``: the paper's analyses on a prepared dataset.

temporal (Sec. 3.3): accuracy, time and memory of naive DM against the number of synthetic frames.
grouping (Suppl. 9.1): per class, frame-only against video model and the inter-frame Hamming score.
Each prints its table and logs it (JSON, CSV, metrics) with a PNG plot to MLflow.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raydd.analysis.config import GROUPING, TEMPORAL, AnalyseConfig
from raydd.analysis.grouping import run_grouping
from raydd.analysis.report import grouping_figure, grouping_table, log_table, markdown, temporal_figure, temporal_table
from raydd.analysis.temporal import frame_counts, run_temporal
from raydd.config import run_command, to_dict
from raydd.data.reader import PreparedDataset, open_prepared
from raydd.tracking import Tracker, mlflow_run


def _temporal(config: AnalyseConfig, dataset: PreparedDataset, tracker: Tracker) -> tuple[list[dict], str]:
    rows = run_temporal(config, dataset)
    table = temporal_table(rows)
    tracker.log_series({f"frames{r.frames}/dm_loss": r.losses for r in rows})
    metrics = {f"frames{entry['frames']}/{k}": v for entry in table for k, v in entry.items() if k != "frames"}
    log_table(tracker, TEMPORAL, table, temporal_figure(rows), metrics)
    return table, f"naive DM ({config.model}, IPC {config.ipc}, {config.iterations} iterations); top-1 over {config.runs} runs, final epoch"


def _grouping(config: AnalyseConfig, dataset: PreparedDataset, tracker: Tracker) -> tuple[list[dict], str]:
    result = run_grouping(config, dataset)
    metrics = {"frame_top1_mean": result.frame_top1[0], "frame_top1_std": result.frame_top1[1]}
    metrics |= {"video_top1_mean": result.video_top1[0], "video_top1_std": result.video_top1[1]}
    agreement = {"hamming_agreement": result.hamming_agreement, "gain_agreement": result.gain_agreement}
    metrics |= {k: v for k, v in agreement.items() if v is not None}
    log_table(tracker, GROUPING, grouping_table(result), grouping_figure(result), metrics)
    footer = ", ".join(f"{name} model top-1 {metrics[k + '_mean']:.1f} ± {metrics[k + '_std']:.1f} %" for name, k in (("frame", "frame_top1"), ("video", "video_top1")))
    if result.hamming_agreement is not None:
        footer += f"; agreement with the dataset's groups: Hamming {result.hamming_agreement:.0%}, gain {result.gain_agreement:.0%}"
    return grouping_table(result), footer + f" (over {config.runs} runs)"


def analyse(config: AnalyseConfig) -> list[dict]:
    dataset = open_prepared(config.data)
    if config.study == TEMPORAL:  # a bad --frames fails here, before any MLflow run is opened
        frame_counts(config.frames, int(dataset.manifest.metadata["clip_shape"][0]))
    tags = {"raydd.dataset": dataset.spec.name, "raydd.dataset_manifest_sha256": dataset.manifest.content_sha256()}
    with mlflow_run(config.store, config.experiment, f"{config.study}-{dataset.spec.name}", to_dict(config), tags) as tracker:
        table, footer = (_temporal if config.study == TEMPORAL else _grouping)(config, dataset, tracker)
    print(f"\n{config.study} study on {dataset.spec.name} ({dataset.location}):\n{markdown(table)}\n{footer}", flush=True)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(AnalyseConfig, analyse, argv, "raydd.analyse", "The paper's analyses: temporal study and static/dynamic grouping.")


if __name__ == "__main__":
    sys.exit(main())
