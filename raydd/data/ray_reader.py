"""A Ray Data dataset over the shards of a prepared dataset, for distributed readers.

This adapter is the one place under ``raydd.data`` that imports Ray; each shard becomes one block,
read by whichever Ray worker runs it.
"""

from __future__ import annotations

import numpy as np
import ray.data

from raydd.data.reader import open_prepared
from raydd.data.shards import read_clip_shard
from raydd.errors import RayddError
from raydd.storage import resolve


def _read_shards(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    frames, labels, sources = [], [], []
    for uri in batch["shard"]:
        shard = read_clip_shard(resolve(str(uri)))
        frames.append(np.array(shard.frames_NTHWC))
        labels.append(shard.labels)
        sources.extend(shard.sources)
    return {"frames": np.concatenate(frames), "label": np.concatenate(labels), "source": np.asarray(sources)}


def ray_dataset(uri: str, split: str = "train") -> ray.data.Dataset:
    """Rows ``{"frames": uint8 (T, H, W, C), "label": int, "source": str}`` of one split."""
    dataset = open_prepared(uri)
    shards = [dataset.location.child(record.name).uri for record in dataset.manifest.group(split) if record.rows]
    if not shards:
        raise RayddError(f"{dataset.location} has no clips in split {split!r}: splits are train and test")
    items = ray.data.from_items([{"shard": shard} for shard in shards], override_num_blocks=len(shards))
    return items.map_batches(_read_shards, batch_size=1, batch_format="numpy")
