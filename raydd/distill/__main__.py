"""``python -m raydd.distill``: distil a prepared dataset (DM / MTT / FRePo, naive or static-dynamic) on
Ray Train into STORE/distilled/..., log it to MLflow and evaluate it."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raydd.config import run_command
from raydd.distill.config import DistillConfig
from raydd.distill.pipeline import distill


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(DistillConfig, distill, argv, "raydd.distill", "Distil a prepared video dataset into a tiny synthetic training set.")


if __name__ == "__main__":
    sys.exit(main())
