"""``python -m raydd.distill``: distil a prepared dataset (DM / MTT / FRePo, naive or static-dynamic) on
Ray Train into STORE/distilled/..., log it to MLflow and evaluate it; ``--plan`` prints what that needs."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raydd.config import run_command
from raydd.distill.driver import distill
from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import RunPresets, printed_config, resolve_presets


def show_plan(config: DistillConfig, presets: RunPresets) -> None:
    """Print the plan and start nothing (no Ray task, no write); refuses what a given cluster cannot place."""
    from raydd.cluster import capacity
    from raydd.planning.distill import plan_distill
    from raydd.planning.report import format_distill

    print(format_distill(plan_distill(config, presets, capacity(config.ray_address))))


def run(config: DistillConfig) -> object:
    presets = resolve_presets(config)  # once, here: the engines receive it
    return show_plan(config, presets) if config.plan else distill(config, presets)


def main(argv: Sequence[str] | None = None) -> int:
    description = "Distil a prepared video dataset into a tiny synthetic training set."
    return run_command(DistillConfig, run, argv, "raydd.distill", description, printed=printed_config)


if __name__ == "__main__":
    sys.exit(main())
