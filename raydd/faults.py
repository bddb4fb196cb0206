"""Fault injection for tests and chaos benchmarks, off the public command line.

Faults are read from one environment variable, ``RAYDD_FAULTS``: comma-separated ``name=integer`` pairs, e.g.
``RAYDD_FAULTS=fail_at_iteration=3,fail_shard=1``. Each fault fires once (a marker file in the store records
that it fired), so the re-run or retry that follows succeeds, as after a real crash. Known faults:

* ``fail_at_iteration``: distill's first attempt of a stage dies on rank 0 after this iteration.
* ``fail_shard``: prepare's writer of this shard number fails half-way, as a crashed task would.
* ``fail_expert``: the experts job's task for this expert index fails once.
* ``interrupt_after_trials``: a tune sweep stops its driver after this many finished trials.
* ``pause_prepare_after_clips``: prepare's driver, once this many clips are done (its throughput gauge set),
  waits until a writer opens the named pipe STORE/.faults/prepare-resume (a local store only).

Unset or absent: no fault. A malformed value is refused in one line. Ray workers inherit the variable from
the driver's environment (local clusters) or from the job's runtime environment.
"""

from __future__ import annotations

import os

from raydd.errors import RayddError

FAULTS_VARIABLE = "RAYDD_FAULTS"
KNOWN_FAULTS = (
    "fail_at_iteration",
    "fail_shard",
    "fail_expert",
    "interrupt_after_trials",
    "pause_prepare_after_clips",
)


def active_faults() -> dict[str, int]:
    """The faults set in ``$RAYDD_FAULTS``, by name."""
    text = os.environ.get(FAULTS_VARIABLE, "").strip()
    faults: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in KNOWN_FAULTS or not value.lstrip("-").isdigit():
            raise RayddError(
                f"{FAULTS_VARIABLE}={text!r}: expected comma-separated name=integer pairs with names among "
                f"{', '.join(KNOWN_FAULTS)}; unset it for no fault"
            )
        faults[name] = int(value)
    return faults


def fault(name: str) -> int:
    """The value of fault ``name``, or -1 when it is not set (no fault)."""
    if name not in KNOWN_FAULTS:
        raise ValueError(f"unknown fault {name!r}")
    return active_faults().get(name, -1)
