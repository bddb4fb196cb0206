"""Decide what an evaluation trains on and check it against the test split before anything runs."""

from __future__ import annotations

import dataclasses

from raydd.data.reader import PreparedDataset, open_prepared
from raydd.distilled_set import DISTILLED_KIND, STATIC_DYNAMIC, VIDEOS, load_distilled, load_static_dynamic
from raydd.errors import RayddError
from raydd.evaluation.protocols import FREPO, PROTOCOL, STANDARD, lr_and_epochs
from raydd.evaluation.runs import DISTILLED, RANDOM_REAL, REAL, STILLS_ONLY, RunTask
from raydd.evaluation.train import TrainSettings
from raydd.storage import manifest_or_none, resolve


@dataclasses.dataclass(frozen=True)
class EvaluationPlan:
    tasks: tuple[RunTask, ...]
    kind: str
    reference: PreparedDataset  # the prepared dataset whose test split scores every run
    train_clips: int  # clips one epoch trains on
    storage_ratio: float | None  # stored values against IPC full videos a class (random real: 1.0; full data: None)
    protocol: str = PROTOCOL.name  # what the runs record


def plan_evaluation(
    *,
    data: str,
    test: str | None,
    model: str,
    runs: int,
    random_ipc: int,
    preset: str,
    epochs: int | None,
    lr: float | None,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    seed: int,
    device: str,
    stills_only: bool = False,
) -> EvaluationPlan:
    repair = PROTOCOL.repair_static_dynamic
    manifest = manifest_or_none(resolve(data))
    distilled_set = manifest is not None and manifest.kind == DISTILLED_KIND
    representation = manifest.metadata.get("representation", VIDEOS) if distilled_set else "prepared dataset"
    if stills_only and representation != STATIC_DYNAMIC:
        raise RayddError(
            f"--stills-only trains on the still images of a static-dynamic distilled set, and {data} is a "
            f"{representation}: give --data a set distilled with --paradigm static-dynamic, or drop --stills-only"
        )
    storage_ratio = None
    if distilled_set:
        if random_ipc:
            raise RayddError("--random-ipc samples real clips: give --data a prepared dataset, not a distilled set")
        distilled = load_distilled(data)
        reference = open_prepared(test or distilled.dataset_uri)
        _check_compatible(reference, distilled.classes, distilled.clip_shape, f"distilled set {data}")
        kind, train_clips, auto_preset = DISTILLED, len(distilled.labels), eval_preset_of(distilled.metadata)
        storage_ratio = distilled.metadata.get("storage_ratio")
        if stills_only:
            parts = load_static_dynamic(data)
            kind, train_clips, storage_ratio = STILLS_ONLY, len(parts.static_NCHW), parts.stills_storage_ratio()
        elif representation == STATIC_DYNAMIC and repair:
            train_clips = len(distilled.classes) * distilled.metadata["ipc"]
    else:
        source = open_prepared(data)
        reference = open_prepared(test) if test else source
        _check_compatible(reference, source.classes, tuple(source.manifest.metadata["clip_shape"]), f"dataset {data}")
        kind, auto_preset = (RANDOM_REAL if random_ipc else REAL), STANDARD
        counts = source.manifest.metadata["class_counts"]["train"].values()
        train_clips = sum(min(random_ipc, n) for n in counts) if random_ipc else sum(counts)
        storage_ratio = 1.0 if random_ipc else None
    chosen = preset if preset != "auto" else auto_preset
    preset_lr, preset_epochs = lr_and_epochs(model, chosen)
    tasks = tuple(
        RunTask(
            run=run,
            settings=TrainSettings(
                model, epochs or preset_epochs, lr or preset_lr, batch_size, momentum, weight_decay, seed + run
            ),
            kind=kind,
            data_uri=data,
            test_uri=str(reference.location),
            random_ipc=random_ipc,
            device=device,
        )
        for run in range(runs)
    )
    return EvaluationPlan(tasks, kind, reference, train_clips, storage_ratio)


def eval_preset_of(metadata: dict) -> str:
    """The lr preset a distilled set is evaluated with: its manifest's ``eval_preset``, which distill writes from the
    method's catalog row. Sets distilled before it was recorded: FRePo's for FRePo sets, the standard one else."""
    if "eval_preset" in metadata:
        return metadata["eval_preset"]
    return FREPO if str(metadata.get("method", "")).split("-", 1)[0] == "frepo" else STANDARD


def _check_compatible(
    reference: PreparedDataset, classes: tuple[str, ...], clip_shape: tuple[int, ...], what: str
) -> None:
    expected_shape = tuple(reference.manifest.metadata["clip_shape"])
    if tuple(classes) != reference.classes:
        raise RayddError(
            f"{what} has {len(classes)} classes ({', '.join(classes[:3])}, ...) but the test split of "
            f"{reference.location} "
            f"has {len(reference.classes)} ({', '.join(reference.classes[:3])}, ...): evaluate against the dataset "
            "it was made from (--test)"
        )
    if tuple(clip_shape) != expected_shape:
        raise RayddError(
            f"{what} has clips of shape {tuple(clip_shape)} (T, H, W, C) but the test split of {reference.location} "
            "has "
            f"{expected_shape}: prepare the test data with the same --frames/--height/--width"
        )
