"""``python -m raydd.analyse --study {temporal,grouping}``: the paper's analyses on a prepared dataset.

temporal (Sec. 3.3): accuracy, time and memory of naive DM against the number of synthetic frames.
grouping (Suppl. 9.1): per class, frame-only against video model and the inter-frame Hamming score.
Each prints its table and logs it (JSON, CSV, metrics) with a PNG plot to MLflow.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raydd.analysis.report import Table
from raydd.analysis.study import run_study
from raydd.analysis.study_config import AnalyseConfig
from raydd.config import run_command


def analyse(config: AnalyseConfig) -> Table:
    study = run_study(config)
    print(study.text, flush=True)
    return study.table


def main(argv: Sequence[str] | None = None) -> int:
    description = "The paper's analyses: the temporal study and the static/dynamic class grouping."
    return run_command(AnalyseConfig, analyse, argv, "raydd.analyse", description)


if __name__ == "__main__":
    sys.exit(main())
