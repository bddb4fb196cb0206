"""``python -m raydd.evaluate``: train N fresh networks on a training set, in parallel on Ray, and score
them on the real test split (final epoch, mean ± std) under a named protocol. Logged to MLflow."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raydd.config import run_command
from raydd.evaluation.job import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(
        EvalConfig,
        evaluate,
        argv,
        "raydd.evaluate",
        "Train fresh networks on a training set and score them on the real test split.",
    )


if __name__ == "__main__":
    sys.exit(main())
