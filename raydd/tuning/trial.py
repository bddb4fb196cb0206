"""One trial of a sweep, pure torch: stage 2 with the trial's lrs, its loss reported as it goes, then a
short evaluation whose validation accuracy is the sweep's objective.

The validation clips are a seeded fraction of every class of the *train* split. Neither stage 1 nor
stage 2 of a sweep matches them, and no trial reads the test split: choosing hyper-parameters on the
test split would make the reported test accuracy optimistic.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import numpy as np
import torch

from raydd.classes import shuffled_per_class
from raydd.data.reader import open_prepared, read_labels
from raydd.devices import pick_device
from raydd.distill.loop import SingleProcess
from raydd.distill.methods.catalog import method_info
from raydd.distill.stages import StageSpec, build_stage, fit_and_write_static, fit_in_process
from raydd.errors import RayddError
from raydd.evaluation.protocols import lr_and_epochs
from raydd.evaluation.sources import RealClips, TensorClips
from raydd.evaluation.train import TrainSettings, train_and_test


def validation_split(
    labels: torch.Tensor, num_classes: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices of a split: ``fraction`` of every class (at least one clip, never all)
    held out, chosen by ``seed``."""
    train, validation = [], []
    for c, members in enumerate(shuffled_per_class(labels, num_classes, seed)):
        if len(members) < 2:
            raise RayddError(
                f"class {c} has {len(members)} training clip(s): a validation split needs at least 2 per class"
            )
        held = min(len(members) - 1, max(1, round(fraction * len(members))))
        validation.append(members[:held])
        train.append(members[held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    stage: StageSpec  # DYNAMIC with static_uri; lr_dynamic and lr_hal come from each trial
    validation_fraction: float
    eval_epochs: int
    eval_model: str = "minic3d"
    report_every: int = 1

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """From the label column alone: the tune driver never maps (or, on S3, fetches) a frame."""
        dataset = open_prepared(self.stage.dataset_uri)
        labels = torch.from_numpy(read_labels(dataset, "train"))
        return validation_split(labels, len(dataset.classes), self.validation_fraction, self.stage.seed)


@dataclasses.dataclass(frozen=True)
class TrialResult:
    losses: tuple[float, ...]
    val_top1: float  # percent
    seconds: float
    validation_clips: int


def fit_static(spec: StageSpec, train_indices: np.ndarray, static_uri: str) -> str:
    """Stage 1 on the sweep's training clips, written where every trial's stage 2 reads it."""
    return fit_and_write_static(spec, static_uri, functools.partial(fit_in_process, real_indices=train_indices))


def run_trial(
    spec: TrialSpec, lr_dynamic: float, lr_hal: float, report: Callable[[int, list[float]], None]
) -> TrialResult:
    """Stage 2 for the preset's iterations, ``report(iterations done, losses so far)`` every ``report_every``
    iterations but the last, then train ``eval_model`` on the rendered set and score it on the validation clips.
    It logs nothing itself: the sweep's driver logs what is reported."""
    started = time.perf_counter()
    stage = dataclasses.replace(
        spec.stage, preset=dataclasses.replace(spec.stage.preset, lr_dynamic=lr_dynamic, lr_hal=lr_hal)
    )
    device = pick_device(stage.device)
    dataset = open_prepared(stage.dataset_uri)
    train_indices, validation_indices = spec.split()
    distiller = build_stage(stage, SingleProcess(), device, real_indices=train_indices)
    iterations, losses = stage.preset.iterations, []
    for iteration in range(iterations):
        losses.append(distiller.step(iteration).loss)
        if (iteration + 1) % spec.report_every == 0 and iteration + 1 < iterations:
            report(iteration + 1, losses)
    synthetic = distiller.synthetic
    train = TensorClips(synthetic.render().detach().cpu(), synthetic.labels.cpu())
    validation = RealClips(dataset.split("train"), dataset.mean, dataset.std, validation_indices)
    lr, _ = lr_and_epochs(spec.eval_model, method_info(stage.method).eval_preset)
    settings = TrainSettings(model=spec.eval_model, epochs=spec.eval_epochs, lr=lr, batch_size=256, seed=stage.seed)
    clip_shape = tuple(dataset.manifest.metadata["clip_shape"])
    result = train_and_test(
        settings, train, validation, num_classes=len(dataset.classes), clip_shape=clip_shape, device=device
    )
    return TrialResult(tuple(losses), 100 * result.top1, time.perf_counter() - started, len(validation_indices))
