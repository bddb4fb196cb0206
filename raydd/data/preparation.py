"""The prepare job: a :class:`PrepareConfig` in, a prepared dataset in STORE/datasets/NAME out.

:func:`prepare` indexes the raw videos, plans shards and runs :func:`~raydd.data.ingest.write_shard` as parallel
Ray tasks, then publishes the manifest (last) and removes shards no manifest references. ``python -m raydd.prepare``
is its command line.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

from raydd import faults, metrics
from raydd.cluster import capacity
from raydd.config import RaySection, SeedSection, StoreSection, check, check_choice, option
from raydd.data.ingest import assemble_manifest, plan_shards, write_shard
from raydd.data.layouts import index_source
from raydd.data.specs import DatasetSpec, dataset_names, get_spec
from raydd.errors import RayddError
from raydd.layout import StoreLayout
from raydd.parallel import ensure_ray, run_tasks
from raydd.resources import tasks_at_once
from raydd.storage import (
    Location,
    Manifest,
    delete,
    exists,
    list_names,
    manifest_or_none,
    require_writable_root,
    resolve,
    size,
    write_manifest,
)


@dataclasses.dataclass(frozen=True)
class ClipSection:
    """How a dataset's videos become clips and splits: ``raydd.prepare``'s flags, and ``raydd.pipeline``'s, which
    prepares the dataset it distils (a user's folder needs them there too)."""

    frames: int | None = option(None, "frames sampled uniformly per clip (default: the dataset's, e.g. 16 for UCF101)")
    height: int | None = option(None, "frame height in pixels (default: the dataset's)")
    width: int | None = option(None, "frame width in pixels (default: the dataset's)")
    split: int = option(1, "official split number for ucf101, miniucf and hmdb51", choices=(1, 2, 3))
    test_fraction: float = option(0.3, "fraction of each class held out for testing (folder datasets)")

    def check_clips(self) -> None:
        for name in ("frames", "height", "width"):
            value = getattr(self, name)
            check(value is None or value > 0, name, "a positive integer")
        check(0 <= self.test_fraction < 1, "test_fraction", "a number in [0, 1)")

    def clip_options(self) -> dict[str, Any]:
        """This section's values by field name (to build a :class:`PrepareConfig` from another command's)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(ClipSection)}


@dataclasses.dataclass(frozen=True)
class PrepareConfig(StoreSection, RaySection, SeedSection, ClipSection):
    """The prepared dataset lands in STORE/datasets/DATASET."""

    dataset: str = option("builtin", "dataset to prepare", choices=dataset_names())
    source: str | None = option(None, "folder or URI holding the raw videos (builtin needs none)")
    shard_mb: float = option(256.0, "target size of one Arrow shard in MiB")
    max_bad_fraction: float = option(0.05, "stop with an error when more than this fraction of videos is unreadable")
    workers: int = option(0, "shard writers running at once (0: one per CPU of the Ray cluster)")
    overwrite: bool = option(
        False,
        "replace a prepared dataset made with other settings (it stays readable until the new one is complete; "
        "shards whose inputs are unchanged are reused)",
    )

    def __post_init__(self) -> None:
        check_choice(self.dataset, "dataset", dataset_names())
        self.check_clips()
        check(self.shard_mb > 0, "shard_mb", "a positive number of MiB")
        check(0 <= self.max_bad_fraction <= 1, "max_bad_fraction", "a number in [0, 1]")
        check(self.workers >= 0, "workers", "0 (one per CPU) or a positive integer")

    def spec(self) -> DatasetSpec:
        """The registered spec with this run's overrides; settings a layout ignores keep their defaults,
        so that changing them does not count as "other settings" for an existing dataset."""
        base = get_spec(self.dataset)
        return dataclasses.replace(
            base,
            num_frames=self.frames or base.num_frames,
            height=self.height or base.height,
            width=self.width or base.width,
            split=self.split if base.layout in {"ucf101", "hmdb51"} else base.split,
            test_fraction=self.test_fraction if base.layout == "folder" else base.test_fraction,
            seed=self.seed if base.layout in {"folder", "builtin"} else base.seed,
        )


def prepare(config: PrepareConfig) -> Manifest:
    """Prepare ``config.dataset`` into the store; a no-op when it is already complete with the same settings."""
    spec = config.spec()
    layout = StoreLayout.of(config.store)
    require_writable_root(layout.root)
    target = layout.dataset(spec.name)
    existing = manifest_or_none(target)
    if existing is not None and not config.overwrite:
        prepared = DatasetSpec.from_dict(existing.metadata.get("spec", {}))
        if prepared != spec:
            differ = [f.name for f in dataclasses.fields(spec) if getattr(prepared, f.name) != getattr(spec, f.name)]
            raise RayddError(
                f"{target} already holds {spec.name} prepared with other settings ({', '.join(differ)}): pass "
                "--overwrite to raydd.prepare to replace it, or another --store"
            )
        damaged = _damaged_shards(target, existing)
        if not damaged:
            print(f"{spec.name} is already prepared at {target} with these settings: nothing to do", file=sys.stderr)
            return existing
        print(
            f"warning: {target}: {', '.join(damaged)} missing or not the size its manifest lists: writing "
            f"{'it' if len(damaged) == 1 else 'them'} again",
            file=sys.stderr,
        )
        for name in damaged:
            delete(target.child(name))
    source = resolve(config.source) if config.source else None
    index = index_source(spec, source)
    plans = plan_shards(spec, index, config.shard_mb)
    ensure_ray(config.ray_address)
    started = time.perf_counter()
    source_uri = source.uri if source else None
    calls = [(spec, plan, target.uri, source_uri, len(index.classes)) for plan in plans]
    publish = _throughput(spec.name, started, layout.root)
    results = list(
        run_tasks(
            write_shard,
            calls,
            description=f"prepare {spec.name}",
            weights=[len(p.clips) for p in plans],
            unit="clip",
            max_in_flight=config.workers or tasks_at_once(1, 0, capacity()),
            reports_progress=True,
            on_progress=publish,
        )
    )
    for result in results:
        for entry in result.skipped:
            print(f"warning: skipped {entry['source']}: {entry['reason']}", file=sys.stderr)
    manifest = assemble_manifest(spec, index, sorted(results, key=lambda r: r.record.name), config.max_bad_fraction)
    write_manifest(target, manifest)
    _remove_unreferenced(target, manifest)
    seconds = time.perf_counter() - started
    _print_summary(spec.name, target, manifest, results, seconds)
    return manifest


def _throughput(dataset: str, started: float, root: Location) -> Callable[[int], None]:
    """What the driver calls each time the clips done grow: the throughput gauge, set while the tasks run so that
    Prometheus scrapes it during the run (a gauge set as the driver exits is never scraped)."""

    def publish(clips: int) -> None:
        clips_per_second = clips / max(time.perf_counter() - started, 1e-9)
        metrics.set_gauge(metrics.PREPARE_CLIPS_PER_SECOND, clips_per_second, dataset=dataset)
        faults.fire("pause_prepare_after_clips", clips, scope=root)  # the tasks and the export go on meanwhile

    return publish


def _damaged_shards(target: Location, manifest: Manifest) -> list[str]:
    """Listed shards that are missing or whose size differs from the manifest's (cut short on storage, say): one
    size query a shard, so a complete dataset's re-run stays cheap; a same-size corruption needs verify=True."""
    damaged = []
    for record in manifest.shards:
        location = target.child(record.name)
        if not exists(location) or size(location) != record.bytes:
            damaged.append(record.name)
    return damaged


def _remove_unreferenced(target: Location, manifest: Manifest) -> None:
    """Delete shards that no manifest references (an overwritten dataset, a run with other settings)."""
    keep = {shard.name for shard in manifest.shards}
    for name in list_names(target):
        if name.endswith(".arrow") and name not in keep:
            delete(target.child(name))


def _print_summary(name: str, target: Location, manifest: Manifest, results: list, seconds: float) -> None:
    clips = sum(shard.rows for shard in manifest.shards)
    written = sum(1 for r in results if not r.reused)
    size = sum(shard.bytes for shard in manifest.shards)
    counts = manifest.metadata["clips"]
    print(
        f"prepared {name}: {clips} clips ({counts.get('train', 0)} train / {counts.get('test', 0)} test) in "
        f"{seconds:.1f} s, "
        f"{clips / max(seconds, 1e-9):.1f} clips/s, {size / 1e6:.1f} MB in {len(manifest.shards)} shards "
        f"({written} written, {len(results) - written} reused), {manifest.metadata['skipped']['count']} skipped, "
        f"{manifest.metadata['missing']['count']} missing -> {target}"
    )
