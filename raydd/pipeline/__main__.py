"""``python -m raydd.pipeline``: the whole pipeline on one dataset, end to end.

prepare -> experts (MTT only) -> distil static-dynamic -> distil naive at the same IPC -> evaluate both,
the static-dynamic set's stage-1 stills alone (what stage 2 adds) and random real clips at that IPC under
one protocol, then one table (the engine: :func:`raydd.pipeline.comparison.run_pipeline`). With no flags it
runs on the built-in dataset on CPU cores.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raydd.config import run_command
from raydd.pipeline.comparison import PipelineConfig, run_pipeline


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
