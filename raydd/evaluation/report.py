"""Turn run results into the numbers raydd reports and logs."""

from __future__ import annotations

import statistics

from raydd.evaluation.train import RunResult


def summarize(results: list[RunResult], classes: tuple[str, ...], static_classes: tuple[str, ...]) -> dict[str, float]:
    """Mean and std (over runs) of top-1, top-k and, where the dataset defines them, the static and
    dynamic class groups' accuracies. Percentages."""

    def mean_std(values: list[float], name: str) -> dict[str, float]:
        return {f"{name}_mean": 100 * statistics.fmean(values), f"{name}_std": 100 * (statistics.pstdev(values) if len(values) > 1 else 0.0)}

    metrics = {**mean_std([r.top1 for r in results], "top1"), **mean_std([r.top5 for r in results], f"top{results[0].top_k}")}
    if static_classes:
        static = [i for i, name in enumerate(classes) if name in static_classes]
        dynamic = [i for i in range(len(classes)) if i not in static]
        for group, members in (("static", static), ("dynamic", dynamic)):
            metrics.update(mean_std([statistics.fmean(r.per_class[i] for i in members) for r in results], f"{group}_top1"))
    return metrics


def describe(metrics: dict[str, float], runs: int, top_k: int) -> str:
    text = f"top-1 {metrics['top1_mean']:.1f} ± {metrics['top1_std']:.1f} %, top-{top_k} {metrics[f'top{top_k}_mean']:.1f} ± {metrics[f'top{top_k}_std']:.1f} %"
    if "static_top1_mean" in metrics:
        text += f" (static classes {metrics['static_top1_mean']:.1f} %, dynamic classes {metrics['dynamic_top1_mean']:.1f} %)"
    return text + f", over {runs} runs, final epoch"
