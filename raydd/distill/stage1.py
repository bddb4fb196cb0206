"""Stage 1, fitted and written in one place: the still images of a static-dynamic run, learnt on Ray Train
by the distill engine or in one process by a sweep, stored with their class-major labels and the settings
that made them (where later runs and trials reuse them)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from raydd.classes import class_major_labels
from raydd.data.reader import open_prepared
from raydd.devices import pick_device
from raydd.distill.artifact import write_static
from raydd.distill.loop import SingleProcess
from raydd.distill.stages import STATIC, StageSpec, build_stage


def fit_and_write_static(spec: StageSpec, static_uri: str, fit: Callable[[StageSpec], torch.Tensor]) -> str:
    """``fit(spec)`` (the learnt images, class-major) written at ``static_uri``; returns ``static_uri``."""
    images_NCHW = fit(spec)
    labels = class_major_labels(len(open_prepared(spec.dataset_uri).classes), spec.per_class)
    about = {"dataset_uri": spec.dataset_uri, "method": spec.method, "preset": spec.preset.to_dict(), "stage": STATIC}
    write_static(static_uri, images_NCHW, labels, about)
    return static_uri


def fit_in_process(spec: StageSpec, real_indices: np.ndarray | None = None) -> torch.Tensor:
    """The stage's learnt tensors after its iterations in this process (matching only ``real_indices``)."""
    distiller = build_stage(spec, SingleProcess(), pick_device(spec.device), real_indices=real_indices)
    for iteration in range(spec.preset.iterations):
        distiller.step(iteration)
    return distiller.synthetic.values.detach().cpu()
