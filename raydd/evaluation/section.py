"""How a training set is evaluated, declared once with one set of defaults: ``python -m raydd.evaluate`` reads
these fields as they are (``--runs``, ``--lr-schedule``, ...); distill, pipeline and tune read them through
:func:`~raydd.config.prefixed` as ``--eval-runs``, ``--eval-lr-schedule``, ... (their own ``--epochs``,
or ``--preset-file`` would collide with the bare names)."""

from __future__ import annotations

import dataclasses
from typing import Any

from raydd.config import check, check_choice, option
from raydd.evaluation.protocols import PRESET_NAMES
from raydd.models.registry import CLASSIFIERS

# 5 runs: what the main job's table (python -m raydd.pipeline, README command (a)) is the mean ± std of.
DEFAULT_RUNS = 5


@dataclasses.dataclass(frozen=True)
class EvalSection:
    runs: int = option(
        DEFAULT_RUNS,
        "evaluation runs, each a fresh network (run i: seed + i), reported as mean ± std",
    )
    epochs: int | None = option(
        None, "training epochs of each run (default: the lr schedule's: MiniC3D 500, 1000 with frepo)"
    )
    model: str = option(
        "minic3d", "network each run trains from scratch (convnet: frame-only probe)", choices=CLASSIFIERS
    )
    lr_schedule: str = option(
        "auto",
        "lr/epochs schedule (Suppl. 11.3): standard (lr 1e-2), frepo (lr 1e-4, 1000 epochs), auto (frepo for "
        "FRePo sets, else standard)",
        choices=PRESET_NAMES,
        deprecated=("--preset",),
    )


_CHOICES = {f.name: f.metadata["choices"] for f in dataclasses.fields(EvalSection) if f.metadata["choices"]}


def check_evaluation(values: dict[str, Any], prefix: str = "", *, min_runs: int = 1) -> None:
    """The section's checks on the fields a command has (``values``, by bare name), naming its flags (``prefix`` +
    field). ``min_runs``: 0 where no run means no evaluation (distill)."""
    if "runs" in values:
        allowed = "a positive integer" if min_runs else "0 (no evaluation) or a positive integer"
        check(values["runs"] >= min_runs, prefix + "runs", allowed)
    if "epochs" in values:
        check(values["epochs"] is None or values["epochs"] >= 1, prefix + "epochs", "a positive integer")
    for name, choices in _CHOICES.items():
        if name in values:
            check_choice(values[name], prefix + name, choices)
