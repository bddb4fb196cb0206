"""Class-major sets and seeded per-class picking, written once.

A distilled set, stage 1's stills and a pairing all order their items class-major: item ``i`` is of class
``i // per_class``. Picking clips per class (random real clips at an IPC, a validation split) draws one
seeded permutation of each class's rows in class order, so the same seed picks the same clips everywhere.
"""

from __future__ import annotations

import numpy as np
import torch


def class_major_labels(num_classes: int, per_class: int, device: torch.device | None = None) -> torch.Tensor:
    """``[0] * per_class + [1] * per_class + ...``: the labels of a class-major set."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def shuffled_per_class(labels: torch.Tensor, num_classes: int, seed: int) -> list[np.ndarray]:
    """Each class's row indices in a random order drawn from ``seed`` (one generator, classes in order)."""
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    return [rng.permutation(np.flatnonzero(labels_np == c)) for c in range(num_classes)]


def random_per_class(labels: torch.Tensor, per_class: int, num_classes: int, seed: int) -> np.ndarray:
    """``per_class`` random indices of each class (all of a class if it has fewer), seeded, in ascending order."""
    chosen = [members[:per_class] for members in shuffled_per_class(labels, num_classes, seed)]
    return np.sort(np.concatenate(chosen))
