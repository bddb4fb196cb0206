"""``python -m raydd.pipeline``: the whole pipeline on one dataset, end to end.

prepare -> experts (MTT only) -> distil static-dynamic -> distil naive at the same IPC -> evaluate both,
the static-dynamic set's stage-1 stills alone (what stage 2 adds) and random real clips at that IPC under
one protocol, then one table (:mod:`raydd.distill.comparison`). With no flags it runs on the built-in
dataset on CPU cores.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from raydd.config import parse_config, resolve_defaults, run_command
from raydd.distill.comparison import PipelineConfig, compare, format_table
from raydd.distill.driver import distill
from raydd.distill.methods.catalog import method_info
from raydd.distill.settings import DistillConfig
from raydd.experts.__main__ import ExpertsConfig, experts
from raydd.prepare import PrepareConfig, prepare

__all__ = ["PipelineConfig", "format_table", "main", "run_pipeline"]

# Experts for the built-in dataset: small MiniC3D / ConvNet (width 32), a batch small enough to take
# several steps per epoch on 300 clips, and the built-in MTT presets' lr_teacher.
BUILTIN_EXPERTS = ["--width", "32", "--batch-size", "32", "--lr-teacher", "0.05", "--epochs", "11"]


def _flags(**values: Any) -> list[str]:
    return [
        item
        for key, value in values.items()
        if value is not None
        for item in (f"--{key.replace('_', '-')}", str(value))
    ]


def run_pipeline(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """Returns {row name: {storage_ratio, metrics, output}} (:func:`raydd.distill.comparison.compare`); the
    distillations run no closing evaluation of their own."""
    config = resolve_defaults(config)  # a config built in code may leave the store to $RAYDD_STORE
    common = {"store": config.store, "ray_address": config.ray_address}
    prepare(PrepareConfig(dataset=config.dataset, source=config.source, **common))
    if method_info(config.method).needs_experts:
        extra = BUILTIN_EXPERTS if config.dataset == "builtin" else []
        for model in ("minic3d", "convnet"):
            argv = ["--dataset", config.dataset, "--model", model, *_flags(**common), *extra]
            experts(parse_config(ExpertsConfig, argv, "raydd.experts")[0])
    outputs = {}
    for paradigm in ("static-dynamic", "naive"):
        argv = _flags(
            dataset=config.dataset,
            method=config.method,
            paradigm=paradigm,
            ipc=config.ipc,
            iterations=config.iterations,
            workers=config.workers,
            seed=config.seed,
            eval_runs=0,
            **common,
        )
        outputs[paradigm] = distill(parse_config(DistillConfig, argv, "raydd.distill")[0]).output
    rows = compare(config, outputs)
    print(format_table(rows, config))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(
        PipelineConfig,
        run_pipeline,
        argv,
        "raydd.pipeline",
        "Prepare, distil (static-dynamic and naive) and evaluate one dataset end to end.",
    )


if __name__ == "__main__":
    sys.exit(main())
