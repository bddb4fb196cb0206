"""Class-major labels and seeded per-class picking, the one copy every stage uses."""

from __future__ import annotations

import numpy as np
import torch

from raydd.classes import class_major_labels, random_per_class, shuffled_per_class


def test_class_major_labels_give_item_i_the_class_i_over_per_class() -> None:
    assert class_major_labels(3, 2).tolist() == [0, 0, 1, 1, 2, 2]
    assert class_major_labels(2, 0).tolist() == []


def test_picking_is_seeded_per_class_and_takes_all_of_a_small_class() -> None:
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 2])
    shuffled = shuffled_per_class(labels, 3, seed=7)
    assert [sorted(rows.tolist()) for rows in shuffled] == [[0, 2, 4, 6], [1, 3, 5], [7]]
    chosen = random_per_class(labels, 2, 3, seed=7)
    assert chosen.tolist() == sorted([*shuffled[0][:2], *shuffled[1][:2], 7])
    assert np.array_equal(chosen, random_per_class(labels, 2, 3, seed=7))
    assert any(not np.array_equal(chosen, random_per_class(labels, 2, 3, seed=s)) for s in range(8, 12))
