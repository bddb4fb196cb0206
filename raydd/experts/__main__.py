"""``python -m raydd.experts``: train expert trajectories in parallel on Ray into STORE/experts/DATASET/MODEL."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raydd.cluster import capacity
from raydd.config import run_command
from raydd.experts.job import ExpertsConfig, train_experts
from raydd.planning.report import format_tasks
from raydd.planning.tasks import plan_experts


def run(config: ExpertsConfig) -> None:
    """With --plan print the plan and start nothing (refusing what a given cluster cannot place); else train."""
    if config.plan:
        print(format_tasks(plan_experts(config, capacity(config.ray_address))))
    else:
        train_experts(config)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(
        ExpertsConfig,
        run,
        argv,
        "raydd.experts",
        "Train expert trajectories (MTT) in parallel on Ray into Arrow trajectory shards.",
    )


if __name__ == "__main__":
    sys.exit(main())
