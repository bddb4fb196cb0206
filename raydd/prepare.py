"""``python -m raydd.prepare``: raw videos -> Arrow video shards in STORE/datasets/NAME, in parallel on Ray."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from raydd.config import run_command
from raydd.data.preparation import PrepareConfig, prepare


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(
        PrepareConfig, prepare, argv, "raydd.prepare", "Decode raw videos into Arrow shards, in parallel on Ray."
    )


if __name__ == "__main__":
    sys.exit(main())
