"""Video data: the dataset registry, raw layouts, decoding, Arrow shards, and readers.

``raydd.data`` gives a torch dataset over a prepared dataset (:func:`open_prepared` ->
:class:`PreparedVideos`) and a Ray Data dataset over the same shards (:func:`ray_dataset`).
The readers are imported lazily so that shard-writing workers never pay for importing torch.
"""

from __future__ import annotations

from typing import Any

from raydd.data.specs import DatasetSpec, dataset_names, get_spec

__all__ = [
    "DatasetSpec",
    "PreparedDataset",
    "PreparedVideos",
    "class_counts",
    "dataset_names",
    "get_spec",
    "open_prepared",
    "ray_dataset",
    "read_labels",
]

_LAZY = {
    "PreparedDataset": "raydd.data.reader",
    "PreparedVideos": "raydd.data.reader",
    "open_prepared": "raydd.data.reader",
    "read_labels": "raydd.data.reader",
    "class_counts": "raydd.data.reader",
    "ray_dataset": "raydd.data.ray_reader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raydd.data' has no attribute {name!r}")
