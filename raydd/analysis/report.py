"""Tables and plots of the analyses: rows as plain dicts, printed as Markdown, logged as JSON, CSV and PNG.

Plots use matplotlib's object API (``Figure``, rendered by Agg for PNG), never pyplot's global state,
so nothing needs a display.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from raydd.analysis.grouping import STATIC, GroupingResult
from raydd.analysis.temporal import TemporalRow
from raydd.tracking import Tracker

Table = list[dict[str, Any]]


def temporal_table(rows: Sequence[TemporalRow]) -> Table:
    table = []
    for row in rows:
        m = row.metrics
        entry = {"frames": row.frames, "top1_mean": m["top1_mean"], "top1_std": m["top1_std"]}
        entry |= {f"{g}_top1_mean": m[f"{g}_top1_mean"] for g in ("static", "dynamic") if f"{g}_top1_mean" in m}
        entry |= {
            "seconds_per_iteration": row.seconds_per_iteration,
            "graph_mib": row.graph_mib,
            "stored_values": row.stored_values,
        }
        table.append(entry | ({"cuda_peak_mib": row.cuda_peak_mib} if row.cuda_peak_mib is not None else {}))
    return table


def grouping_table(result: GroupingResult) -> Table:
    return [
        {
            "class": r.name,
            "frame_top1": r.frame_top1,
            "video_top1": r.video_top1,
            "gain": r.video_top1 - r.frame_top1,
            "hamming": r.hamming,
            "hamming_group": r.hamming_group,
            "gain_group": r.gain_group,
        }
        | ({"dataset_group": r.dataset_group} if r.dataset_group else {})
        for r in result.rows
    ]


def temporal_metrics(table: Table) -> dict[str, float]:
    return {f"frames{entry['frames']}/{k}": v for entry in table for k, v in entry.items() if k != "frames"}


def grouping_metrics(result: GroupingResult) -> dict[str, float]:
    metrics = {"frame_top1_mean": result.frame_top1[0], "frame_top1_std": result.frame_top1[1]}
    metrics |= {"video_top1_mean": result.video_top1[0], "video_top1_std": result.video_top1[1]}
    agreement = {"hamming_agreement": result.hamming_agreement, "gain_agreement": result.gain_agreement}
    return metrics | {k: v for k, v in agreement.items() if v is not None}


def grouping_summary(result: GroupingResult, runs: int) -> str:
    (frame, frame_std), (video, video_std) = result.frame_top1, result.video_top1
    text = f"frame model top-1 {frame:.1f} ± {frame_std:.1f} %, video model {video:.1f} ± {video_std:.1f} %"
    text += f" ({runs} runs)"
    if result.hamming_agreement is not None:
        text += f"; agreement with the dataset's groups: Hamming {result.hamming_agreement:.0%}, "
        text += f"gain {result.gain_agreement:.0%}"
    return text


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 1 else f"{value:.1f}"
    return str(value)


def markdown(table: Table) -> str:
    header = list(table[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(row.get(k, "")) for k in header) + " |" for row in table])


def csv_text(table: Table) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return out.getvalue()


def temporal_figure(rows: Sequence[TemporalRow]) -> Figure:
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    frames = [r.frames for r in rows]
    accuracy, time, memory = figure.subplots(1, 3)
    accuracy.errorbar(
        frames,
        [r.metrics["top1_mean"] for r in rows],
        yerr=[r.metrics["top1_std"] for r in rows],
        marker="o",
        capsize=3,
        label="all",
    )
    for group in ("static", "dynamic"):
        if f"{group}_top1_mean" in rows[0].metrics:
            accuracy.plot(
                frames,
                [r.metrics[f"{group}_top1_mean"] for r in rows],
                marker=".",
                linestyle="--",
                label=f"{group} classes",
            )
    accuracy.set(xlabel="synthetic frames", ylabel="test top-1 (%)", title="accuracy")
    accuracy.legend()
    time.plot(frames, [r.seconds_per_iteration for r in rows], marker="o")
    time.set(xlabel="synthetic frames", ylabel="seconds", title="time per DM iteration")
    memory.plot(frames, [r.graph_mib for r in rows], marker="o", label="autograd + synthetic")
    if rows[0].cuda_peak_mib is not None:
        memory.plot(frames, [r.cuda_peak_mib for r in rows], marker="s", label="CUDA peak")
    memory.set(xlabel="synthetic frames", ylabel="MiB", title="memory per DM iteration")
    memory.legend()
    for axes in (accuracy, time, memory):
        axes.set_xscale("log", base=2)
        axes.set_xticks(frames, [str(f) for f in frames])
    return figure


def grouping_figure(result: GroupingResult) -> Figure:
    figure = Figure(figsize=(6.5, 5), layout="constrained")
    axes = figure.subplots()
    for row in result.rows:
        group = row.dataset_group or row.hamming_group
        axes.scatter(
            row.hamming, row.video_top1 - row.frame_top1, color="tab:blue" if group == STATIC else "tab:orange"
        )
        axes.annotate(
            row.name,
            (row.hamming, row.video_top1 - row.frame_top1),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    source = "the dataset's" if result.rows[0].dataset_group else "the Hamming"
    static = [r.hamming for r in result.rows if r.hamming_group == STATIC]
    dynamic = [r.hamming for r in result.rows if r.hamming_group != STATIC]
    if static and dynamic:  # the Hamming split: static to the left of the dotted line
        axes.axvline((max(static) + min(dynamic)) / 2, color="grey", linestyle=":", linewidth=1)
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.set(
        xlabel="inter-frame Hamming distance of frozen features",
        ylabel="video - frame model top-1 (points)",
        title=f"per class ({source} groups: blue static, orange dynamic)",
    )
    return figure


def log_table(tracker: Tracker, name: str, table: Table, figure: Figure, metrics: Mapping[str, float]) -> None:
    """``name``.json / .csv / .png artifacts and ``metrics``."""
    tracker.log_dict({"rows": table}, f"{name}.json")
    with tempfile.TemporaryDirectory() as folder:
        writers: dict[str, Callable[[Path], None]] = {
            ".csv": lambda p: p.write_text(csv_text(table)),
            ".png": lambda p: figure.savefig(p, dpi=110),
        }
        for suffix, write in writers.items():
            path = Path(folder) / f"{name}{suffix}"
            write(path)
            tracker.log_artifact(str(path))
    tracker.log_metrics(metrics)
