"""A Ray Data dataset over the shards of a prepared dataset, for distributed readers.

This adapter is the one place under ``raydd.data`` that imports Ray; each shard becomes one block,
read by whichever Ray worker runs it, through that node's cache.
"""

from __future__ import annotations

import numpy as np
import ray.data

from raydd.data.cache import local_shard
from raydd.data.reader import open_prepared
from raydd.data.shards import read_clip_shard
from raydd.errors import RayddError
from raydd.storage import ShardRecord, resolve


def _read_shards(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    frames, labels, sources = [], [], []
    for uri, nbytes, digest in zip(batch["shard"], batch["bytes"], batch["sha256"]):
        location = resolve(str(uri))
        record = ShardRecord(location.name, 0, int(nbytes), str(digest))
        shard = read_clip_shard(resolve(local_shard(location, record)))
        frames.append(np.array(shard.frames_NTHWC))
        labels.append(shard.labels)
        sources.extend(shard.sources)
    return {"frames": np.concatenate(frames), "label": np.concatenate(labels), "source": np.asarray(sources)}


def ray_dataset(uri: str, split: str = "train") -> ray.data.Dataset:
    """Rows ``{"frames": uint8 (T, H, W, C), "label": int, "source": str}`` of one split."""
    dataset = open_prepared(uri)
    shards = [
        {"shard": dataset.location.child(record.name).uri, "bytes": record.bytes, "sha256": record.sha256}
        for record in dataset.manifest.group(split)
        if record.rows
    ]
    if not shards:
        raise RayddError(f"{dataset.location} has no clips in split {split!r}: splits are train and test")
    items = ray.data.from_items(shards, override_num_blocks=len(shards))
    return items.map_batches(_read_shards, batch_size=1, batch_format="numpy")
