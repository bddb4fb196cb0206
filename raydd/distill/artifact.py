"""Stage artifacts in the store: stage 1's still images (reused across runs and tuning trials), and the
final distilled set (see :mod:`raydd.distilled_set`)."""

from __future__ import annotations

from typing import Any

import torch

from raydd.classes import class_major_labels
from raydd.data.reader import PreparedDataset
from raydd.distill.presets import Preset
from raydd.distilled_set import read_tensor_shard, write_static_dynamic, write_tensor_shard
from raydd.errors import RayddError
from raydd.models.hallucinator import Hallucinator
from raydd.storage import Manifest, manifest_or_none, open_manifest, resolve, size, write_manifest

STATIC_KIND = "raydd.static/1"


def write_static(uri: str, static_NCHW: torch.Tensor, labels: torch.Tensor, metadata: dict[str, Any]) -> Manifest:
    folder = resolve(uri)
    shard = write_tensor_shard(folder, "static.arrow", static_NCHW, labels)
    manifest = Manifest(kind=STATIC_KIND, shards=(shard,), metadata=metadata)
    write_manifest(folder, manifest)
    return manifest


def static_exists(uri: str) -> bool:
    manifest = manifest_or_none(resolve(uri))
    return manifest is not None and manifest.kind == STATIC_KIND


def read_static(
    uri: str, *, num_classes: int, image_shape: tuple[int, int, int]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Stage 1's images (class-major (N, C, H, W)), checked against the dataset they are used with."""
    folder = resolve(uri)
    manifest = open_manifest(folder, STATIC_KIND, what="static images", make_it="python -m raydd.distill")
    record = manifest.shards[0]
    if size(folder.child(record.name)) != record.bytes:
        raise RayddError(
            f"{folder.child(record.name)} does not match its manifest: delete {folder} and distil the static images "
            "again"
        )
    static, labels = read_tensor_shard(folder, record.name, record)
    if (
        tuple(static.shape[1:]) != tuple(image_shape)
        or static.shape[0] % num_classes
        or not torch.equal(labels, class_major_labels(num_classes, static.shape[0] // num_classes))
    ):
        raise RayddError(
            f"static images at {folder} have shape {tuple(static.shape)} for {int(labels.max()) + 1} classes, "
            f"not class-major {num_classes} classes of {tuple(image_shape)}: distil them for this dataset (drop "
            "--static)"
        )
    return static, manifest.metadata


def write_static_dynamic_state(
    uri: str,
    synthetic: dict[str, torch.Tensor],
    preset: Preset,
    dataset: PreparedDataset,
    *,
    method: str,
    ipc: int,
    extra: dict[str, Any],
) -> Manifest:
    """The distilled set of a finished stage 2, from its ``StaticDynamic`` state dict."""
    t, _, _, c = dataset.manifest.metadata["clip_shape"]
    hallucinator = Hallucinator(
        frames=t, channels=c, dynamic_channels=preset.dynamic_channels, variant=preset.hallucinator
    )
    hallucinator.load_state_dict(
        {k.removeprefix("hallucinator."): v for k, v in synthetic.items() if k.startswith("hallucinator.")}
    )
    return write_static_dynamic(
        uri,
        static_NCHW=synthetic["static"],
        dynamic_NCTHW=synthetic["dynamic"],
        hallucinator=hallucinator,
        variant=preset.hallucinator,
        classes=dataset.classes,
        frames=t,
        dataset_uri=str(dataset.location.uri),
        method=f"{method}-static-dynamic",
        ipc=ipc,
        extra=extra,
    )
