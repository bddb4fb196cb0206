"""Prometheus metrics that raydd publishes through Ray's metrics agent (``ray.util.metrics``).

Ray's agent on each node serves every process's metrics on its metrics export port, each name
prefixed with ``ray_`` (``raydd_distill_loss`` is scraped as ``ray_raydd_distill_loss``); the
Grafana dashboard in ``dashboards/`` plots them next to Ray's own node panels. Metrics are created
on first use, so importing this module outside a Ray process costs nothing; a process that never
joined Ray records nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

PROMETHEUS_PREFIX = "ray_"  # what Ray's agent puts in front of application metric names

DISTILL_ITERATIONS_PER_SECOND = "raydd_distill_iterations_per_second"
DISTILL_LOSS = "raydd_distill_loss"
DISTILL_MATCHING_SAMPLES_PER_SECOND = "raydd_distill_matching_samples_per_second"
DISTILL_CHECKPOINT_AGE_SECONDS = "raydd_distill_checkpoint_age_seconds"
EXPERTS_FINISHED_TOTAL = "raydd_experts_finished_total"
PREPARE_CLIPS_PER_SECOND = "raydd_prepare_clips_per_second"

DISTILL_TAGS = ("stage", "method", "dataset")


@dataclasses.dataclass(frozen=True)
class _Definition:
    kind: str  # "gauge" or "counter"
    description: str
    tag_keys: tuple[str, ...]


_DEFINITIONS = {
    DISTILL_ITERATIONS_PER_SECOND: _Definition(
        "gauge", "distillation iterations per second (rank 0, last iteration)", DISTILL_TAGS
    ),
    DISTILL_LOSS: _Definition("gauge", "matching loss of the last distillation iteration (rank 0)", DISTILL_TAGS),
    DISTILL_MATCHING_SAMPLES_PER_SECOND: _Definition(
        "gauge", "matching samples per second of the last iteration (rank 0)", DISTILL_TAGS
    ),
    DISTILL_CHECKPOINT_AGE_SECONDS: _Definition(
        "gauge", "seconds since the stage last saved a checkpoint (or started)", DISTILL_TAGS
    ),
    EXPERTS_FINISHED_TOTAL: _Definition(
        "counter", "expert trajectories finished (trained or reused)", ("dataset", "model")
    ),
    PREPARE_CLIPS_PER_SECOND: _Definition(
        "gauge", "clips per second of a running prepare (clips done / seconds), updated as clips finish", ("dataset",)
    ),
}

EXPORTED = tuple(_DEFINITIONS)
_created: dict[str, Any] = {}


def _metric(name: str) -> Any:
    if name not in _created:
        from ray.util.metrics import Counter, Gauge

        definition = _DEFINITIONS[name]
        kind = Gauge if definition.kind == "gauge" else Counter
        _created[name] = kind(name, description=definition.description, tag_keys=definition.tag_keys)
    return _created[name]


def set_gauge(name: str, value: float, **tags: str) -> None:
    _metric(name).set(float(value), tags=tags)


def increment(name: str, value: float = 1.0, **tags: str) -> None:
    _metric(name).inc(float(value), tags=tags)


def record_distill_iteration(
    *, loss: float, seconds: float, samples: int, checkpoint_age_s: float, tags: dict[str, str]
) -> None:
    """Rank 0's per-iteration gauges: loss, iterations/s, matching samples/s and checkpoint age."""
    seconds = max(seconds, 1e-9)
    set_gauge(DISTILL_LOSS, loss, **tags)
    set_gauge(DISTILL_ITERATIONS_PER_SECOND, 1.0 / seconds, **tags)
    set_gauge(DISTILL_MATCHING_SAMPLES_PER_SECOND, samples / seconds, **tags)
    set_gauge(DISTILL_CHECKPOINT_AGE_SECONDS, checkpoint_age_s, **tags)
