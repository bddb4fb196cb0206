"""The prepare engine: plan shards, write one shard, assemble the manifest. No Ray in here.

:func:`raydd.data.preparation.prepare` (``python -m raydd.prepare``) runs :func:`write_shard` as parallel Ray tasks.

Shard names carry a fingerprint of their inputs (the dataset spec and the exact clips), so:
* a re-run after a crash finds the shards that were finished and writes only the others;
* ``--overwrite`` with new settings writes new names next to the old dataset, which stays readable
  until the new manifest replaces the old one; only then are unreferenced shards removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Callable

import numpy as np

from raydd import faults
from raydd.data.builtin import generate_clip, parse_builtin_source
from raydd.data.decode import VideoDecodeError, decode_clip
from raydd.data.layouts import SPLITS, TRAIN, ClipIndex, ClipRef
from raydd.data.shards import DATASET_KIND, SHARD_FORMAT, read_clip_shard, write_clip_shard
from raydd.data.specs import DatasetSpec
from raydd.errors import RayddError
from raydd.storage import Location, Manifest, ShardRecord, atomic_writer, exists, resolve, sha256, size, storage_errors


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    name: str
    split: str
    clips: tuple[ClipRef, ...]
    index: int  # its place among the dataset's shards (train first)


@dataclasses.dataclass(frozen=True)
class ShardResult:
    """What writing (or finding) one shard produced; summed by the driver into the manifest."""

    record: ShardRecord
    skipped: tuple[dict[str, str], ...]
    class_counts: tuple[int, ...]
    histogram: tuple[tuple[int, ...], ...]  # per channel, counts of each uint8 value
    reused: bool
    seconds: float


def plan_shards(spec: DatasetSpec, index: ClipIndex, shard_mb: float) -> tuple[ShardPlan, ...]:
    """Split each split's clips into shards of about ``shard_mb`` MiB, named by a fingerprint of their inputs."""
    per_shard = max(1, int(shard_mb * (1 << 20)) // spec.clip_bytes)
    spec_json = json.dumps(spec.to_dict(), sort_keys=True)
    plans = []
    for split in SPLITS:
        clips = sorted((c for c in index.clips if c.split == split), key=lambda c: (c.label, c.source))
        random.Random(f"{spec.seed}:{split}").shuffle(clips)  # every shard mixes classes, reproducibly
        for number, start in enumerate(range(0, len(clips), per_shard)):
            chunk = tuple(clips[start : start + per_shard])
            digest = hashlib.sha256(
                json.dumps([SHARD_FORMAT, spec_json, [(c.source, c.label) for c in chunk]]).encode()
            ).hexdigest()[:12]
            name = f"{split}-{number:05d}-{digest}.arrow"
            plans.append(ShardPlan(name=name, split=split, clips=chunk, index=len(plans)))
    return tuple(plans)


def load_clip(spec: DatasetSpec, clip: ClipRef, source: Location | None) -> np.ndarray:
    """The (T, H, W, 3) uint8 frames of one clip: generated for builtin, decoded with PyAV otherwise."""
    if spec.layout == "builtin":
        label, split, number = parse_builtin_source(clip.source)
        return generate_clip(spec, label, split, number)
    assert source is not None
    with storage_errors(clip.source), source.fs.open(clip.source, "rb") as handle:
        return decode_clip(handle, spec.num_frames, spec.height, spec.width)


def clip_histogram(frames: np.ndarray) -> np.ndarray:
    """(C, 256) counts of each uint8 value per channel, in one bincount (channels offset by 256)."""
    channels = frames.shape[-1]
    offsets = np.arange(channels, dtype=np.uint16) * 256
    return np.bincount((frames.reshape(-1, channels) + offsets).ravel(), minlength=256 * channels).reshape(
        channels, 256
    )


def _summary(
    plan: ShardPlan,
    record: ShardRecord,
    labels: np.ndarray,
    histogram: np.ndarray,
    skipped,
    reused: bool,
    started: float,
    n_classes: int,
) -> ShardResult:
    return ShardResult(
        record=record,
        skipped=tuple(skipped),
        class_counts=tuple(np.bincount(labels, minlength=n_classes).tolist()),
        histogram=tuple(tuple(row) for row in histogram.tolist()),
        reused=reused,
        seconds=time.perf_counter() - started,
    )


def write_shard(
    spec: DatasetSpec,
    plan: ShardPlan,
    dataset_uri: str,
    source_uri: str | None,
    n_classes: int,
    progress: Callable[[int], None] | None = None,
) -> ShardResult:
    """Write one shard atomically (or reuse it if a previous run finished it) and summarise it.

    ``progress`` is called with the number of the shard's clips done so far, after each clip.
    """
    report = progress or (lambda done: None)
    started = time.perf_counter()
    folder = resolve(dataset_uri)
    location = folder.child(plan.name)
    if exists(location):
        shard = read_clip_shard(location)
        record = ShardRecord(plan.name, len(shard), size(location), sha256(location), plan.split)
        histogram = np.zeros((shard.frames_NTHWC.shape[-1], 256), np.int64)
        if plan.split == TRAIN:
            histogram = sum((clip_histogram(clip[:, ::2, ::2]) for clip in shard.frames_NTHWC), histogram)
        report(len(plan.clips))
        return _summary(plan, record, shard.labels, histogram, shard.skipped, True, started, n_classes)
    source = resolve(source_uri) if source_uri else None
    frames_NTHWC = np.empty((len(plan.clips), *spec.clip_shape), np.uint8)  # filled in place: no second copy
    histogram = np.zeros((spec.clip_shape[-1], 256), np.int64)
    labels, sources, skipped = [], [], []
    for done, clip in enumerate(plan.clips, 1):
        try:
            frames_NTHWC[len(labels)] = load_clip(spec, clip, source)
        except VideoDecodeError as error:
            where = clip.source if source is None or source.is_local else source.fs.unstrip_protocol(clip.source)
            skipped.append({"source": where, "reason": str(error)})
            report(done)
            continue
        if plan.split == TRAIN:  # mean/std come from the training clips; a quarter of the pixels is plenty
            histogram += clip_histogram(frames_NTHWC[len(labels), :, ::2, ::2])
        labels.append(clip.label)
        sources.append(clip.source)
        report(done)
    labels_array = np.asarray(labels, dtype=np.int32)
    with atomic_writer(location) as handle:
        write_clip_shard(handle, frames_NTHWC[: len(labels)], labels_array, sources, skipped)
        # A writer that dies here has sent the shard's bytes but not committed them: nothing may appear.
        faults.fire("fail_shard", plan.index)
        faults.fire("drop_shard_writes", plan.name, scope=folder)
    record = ShardRecord(plan.name, len(labels), handle.bytes_written, handle.hexdigest(), plan.split)
    return _summary(plan, record, labels_array, histogram, skipped, False, started, n_classes)


def channel_stats(histograms: list[tuple[tuple[int, ...], ...]]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units from summed per-shard value histograms (of every other
    row and column of every clip: a quarter of the pixels, at a quarter of the cost, same statistics)."""
    counts = np.sum([np.asarray(h, dtype=np.float64) for h in histograms], axis=0)  # (C, 256)
    values = np.arange(256) / 255.0
    total = counts.sum(axis=1)
    mean = (counts * values).sum(axis=1) / total
    var = (counts * values**2).sum(axis=1) / total - mean**2
    return mean.round(6).tolist(), np.sqrt(np.maximum(var, 0)).round(6).tolist()


def assemble_manifest(
    spec: DatasetSpec, index: ClipIndex, results: list[ShardResult], max_bad_fraction: float
) -> Manifest:
    """Check the outcome (bad fraction, empty classes) and build the manifest; raises instead of publishing bad data."""
    skipped = [entry for result in results for entry in result.skipped]
    attempted = sum(r.record.rows + len(r.skipped) for r in results)
    if attempted and len(skipped) / attempted > max_bad_fraction:
        examples = "; ".join(f"{s['source']} ({s['reason']})" for s in skipped[:3])
        raise RayddError(
            f"{len(skipped)} of {attempted} videos ({len(skipped) / attempted:.1%}) could not be decoded, above "
            f"--max-bad-fraction {max_bad_fraction}: fix or remove them, or raise the limit. First: {examples}"
        )
    counts: dict[str, list[int]] = {}
    for result in results:
        running = counts.setdefault(result.record.group, [0] * len(index.classes))
        counts[result.record.group] = [a + b for a, b in zip(running, result.class_counts)]
    for label, name in enumerate(index.classes):
        if counts.get(TRAIN, [0] * len(index.classes))[label] == 0:
            raise RayddError(
                f"class {name!r} has no readable training clips left after skipping bad videos: fix its videos"
            )
    mean, std = channel_stats([r.histogram for r in results if r.record.group == TRAIN])
    metadata = {
        "spec": spec.to_dict(),
        "classes": list(index.classes),
        "clip_shape": list(spec.clip_shape),
        "clips": {split: sum(c) for split, c in counts.items()},
        "class_counts": {split: dict(zip(index.classes, c)) for split, c in counts.items()},
        "skipped": {"count": len(skipped), "files": skipped},
        "missing": {"count": len(index.missing), "examples": list(index.missing[:20])},
        "train_mean": mean,
        "train_std": std,
    }
    return Manifest(kind=DATASET_KIND, shards=tuple(r.record for r in results), metadata=metadata)
