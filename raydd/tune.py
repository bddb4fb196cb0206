"""``python -m raydd.tune``: sweep stage 2's ``lr_dynamic`` and ``lr_hal`` with Ray Tune (Optuna + ASHA).

Stage 1 runs once and every trial's stage 2 starts from its images; each trial ends with a short
evaluation on validation clips held out of the train split. The best trial becomes a preset file
(STORE/tune/NAME/best_preset.json) that ``python -m raydd.distill --preset-file FILE`` reads as is.
Running the same command again resumes an interrupted sweep. The engine is :mod:`raydd.tuning.sweep`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raydd.config import run_command
from raydd.tuning.sweep import plan_text, sweep_presets, tune
from raydd.tuning.sweep_config import TuneConfig

__all__ = ["TuneConfig", "main", "sweep_presets", "tune"]


def _run(config: TuneConfig) -> None:
    presets = sweep_presets(config)  # once, here: the sweep receives it
    print(plan_text(config, presets) if config.plan else tune(config, presets).summary())


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(
        TuneConfig,
        _run,
        argv,
        "raydd.tune",
        "Sweep stage 2's lr_dynamic and lr_hal with Ray Tune; write the best as a preset file.",
    )


if __name__ == "__main__":
    sys.exit(main())
