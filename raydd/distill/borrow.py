"""Presets for a dataset the tables have no rows for (``--dataset folder``: the user's own videos).

Such a dataset borrows every field of the nearest table row of the same method and paradigm:

* first the nearest IPC (|ln(ipc / row ipc)|: presets change most with the synthetic set's size, and
  the tables hold the IPCs a user asks for: 1, 5, and 10 on builtin);
* then the nearest shape: the sum of |ln(ours / row's)| over frames T, height H, width W and the
  number of classes (log ratios: doubling a side is as far as halving it, whatever the scale; the
  row's shape is its dataset's registered clip shape and class count);
* ties go to the dataset listed first in :data:`TABLE_DATASETS`.

The run logs which row it borrowed (``preset.borrowed_from`` in MLflow). ``python -m raydd.tune``
finds better settings for the dataset itself.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from raydd.data.specs import get_spec
from raydd.distill.presets import TABLES

# Datasets with their own rows, and their class counts (the registry reads most class lists from a source).
TABLE_DATASETS: dict[str, int] = {"builtin": 10, "miniucf": 50, "hmdb51": 51, "k400": 400, "ssv2": 174}


@dataclasses.dataclass(frozen=True)
class Borrowed:
    dataset: str
    ipc: int
    distance: float  # the shape distance (IPC aside)
    fields: dict[str, Any]

    @property
    def name(self) -> str:
        """What MLflow records as ``preset.borrowed_from``, e.g. ``builtin/ipc1``."""
        return f"{self.dataset}/ipc{self.ipc}"


def borrows(dataset: str) -> bool:
    """Whether ``dataset`` takes its preset from the nearest row: a dataset made from a folder of videos."""
    return get_spec(dataset).layout == "folder"


def shape_distance(ours: tuple[int, int, int, int], theirs: tuple[int, int, int, int]) -> float:
    """Sum of |ln(a / b)| over (T, H, W, classes)."""
    return sum(abs(math.log(a / b)) for a, b in zip(ours, theirs, strict=True))


def row_shape(dataset: str) -> tuple[int, int, int, int]:
    t, h, w, _ = get_spec(dataset).clip_shape
    return (t, h, w, TABLE_DATASETS[dataset])


def nearest_row(method: str, paradigm: str, ipc: int, clip_shape: tuple[int, ...], num_classes: int) -> Borrowed | None:
    """The nearest row of ``method`` x ``paradigm`` to a dataset of ``clip_shape`` (T, H, W[, C]) clips in
    ``num_classes`` classes at ``ipc``; ``None`` when the tables have no row of that method and paradigm."""
    t, h, w = clip_shape[:3]
    ours = (t, h, w, num_classes)
    order = list(TABLE_DATASETS)
    keys = [k for k in TABLES if k[0] == method and k[1] == paradigm and k[2] in TABLE_DATASETS]
    if not keys:
        return None

    def distance(key: tuple[str, str, str, int]) -> tuple[float, float, int]:
        return abs(math.log(key[3] / ipc)), shape_distance(ours, row_shape(key[2])), order.index(key[2])

    best = min(keys, key=distance)
    return Borrowed(best[2], best[3], shape_distance(ours, row_shape(best[2])), dict(TABLES[best]))
