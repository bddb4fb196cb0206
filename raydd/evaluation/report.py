"""Turn run results into the numbers raydd reports and logs."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from raydd.errors import RayddError
from raydd.evaluation.train import RunResult

RANDOM_REAL_ROW = "random real clips"


def summarize(results: list[RunResult], classes: tuple[str, ...], static_classes: tuple[str, ...]) -> dict[str, float]:
    """Mean and std (over runs) of top-1, top-k and, where the dataset defines them, the static and
    dynamic class groups' accuracies. Percentages."""

    def mean_std(values: list[float], name: str) -> dict[str, float]:
        return {
            f"{name}_mean": 100 * statistics.fmean(values),
            f"{name}_std": 100 * (statistics.pstdev(values) if len(values) > 1 else 0.0),
        }

    metrics = {
        **mean_std([r.top1 for r in results], "top1"),
        **mean_std([r.top5 for r in results], f"top{results[0].top_k}"),
    }
    if static_classes:
        static = [i for i, name in enumerate(classes) if name in static_classes]
        dynamic = [i for i in range(len(classes)) if i not in static]
        for group, members in (("static", static), ("dynamic", dynamic)):
            metrics.update(
                mean_std([statistics.fmean(r.per_class[i] for i in members) for r in results], f"{group}_top1")
            )
    return metrics


def describe(metrics: Mapping[str, Any], runs: int, top_k: int) -> str:
    top1 = f"{metrics['top1_mean']:.1f} ± {metrics['top1_std']:.1f}"
    text = f"top-1 {top1} %, top-{top_k} {metrics[f'top{top_k}_mean']:.1f} ± {metrics[f'top{top_k}_std']:.1f} %"
    if "static_top1_mean" in metrics:
        text += (
            f" (static classes {metrics['static_top1_mean']:.1f} ± {metrics['static_top1_std']:.1f} %, "
            f"dynamic classes {metrics['dynamic_top1_mean']:.1f} ± {metrics['dynamic_top1_std']:.1f} %)"
        )
    protocol = f", protocol {metrics['protocol']}" if "protocol" in metrics else ""
    return text + f", over {runs} runs, final epoch{protocol}"


def storage_text(ratio: float | None) -> str:
    """A training set's storage against IPC full videos a class (``-`` where there is no IPC: full data)."""
    return "-" if ratio is None else f"{ratio:.3f}x"


def mean_std_text(metrics: Mapping[str, Any], key: str) -> str:
    """``key``'s mean ± std over runs (``-`` where the metrics lack it, e.g. class groups of a dataset without)."""
    return f"{metrics[key + '_mean']:.1f} ± {metrics[key + '_std']:.1f}" if key + "_mean" in metrics else "-"


def format_comparison(
    rows: Mapping[str, tuple[float | None, Mapping[str, Any]]],
    *,
    protocol: str,
    title: str,
    random_row: str = RANDOM_REAL_ROW,
) -> str:
    """A table of training sets evaluated under one protocol: storage, top-1, static/dynamic classes
    (mean ± std over runs) and the gain in top-1 mean over the ``random_row`` row (``-`` without one).

    ``rows``: {name: (storage_ratio, metrics of evaluate())}. A row evaluated under another protocol
    (its ``metrics["protocol"]``) is refused: gains compare like with like.
    """
    for name, (_, metrics) in rows.items():
        if metrics.get("protocol", protocol) != protocol:
            raise RayddError(
                f"row {name!r} was evaluated under protocol {metrics['protocol']!r}, the table under {protocol!r}: "
                "evaluate it again with this raydd"
            )
    baseline = rows[random_row][1]["top1_mean"] if random_row in rows else None
    width = max([len("training set"), *map(len, rows)])
    header = f"{'training set':<{width}} {'storage':>8} {'top-1':>12} {'static':>12} {'dynamic':>12} {'gain':>7}"
    explained = f"protocol {protocol}; top-1 %, mean ± std over runs, final epoch; gain: top-1 over {random_row}"
    lines = [f"{title} ({explained})", header]
    for name, (ratio, metrics) in rows.items():
        gain = "-" if baseline is None else f"{metrics['top1_mean'] - baseline:+.1f}"
        cells = " ".join(f"{mean_std_text(metrics, key):>12}" for key in ("top1", "static_top1", "dynamic_top1"))
        lines.append(f"{name:<{width}} {storage_text(ratio):>8} {cells} {gain:>7}")
    return "\n".join(lines)
