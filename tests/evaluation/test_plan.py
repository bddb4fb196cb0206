"""What an evaluation takes from a distilled set's manifest: the lr preset, with no distill module imported."""

from __future__ import annotations

from raydd.evaluation.plan import eval_preset_of
from raydd.evaluation.protocols import FREPO, STANDARD


def test_the_manifest_names_the_lr_preset_of_its_evaluation() -> None:
    assert eval_preset_of({"method": "dm-naive", "eval_preset": FREPO}) == FREPO
    assert eval_preset_of({"method": "frepo-naive", "eval_preset": STANDARD}) == STANDARD


def test_sets_distilled_before_the_manifest_named_it_keep_their_preset() -> None:
    assert eval_preset_of({"method": "frepo-naive"}) == eval_preset_of({"method": "frepo-static-dynamic"}) == FREPO
    assert eval_preset_of({"method": "dm-naive"}) == eval_preset_of({"method": "mtt-static-dynamic"}) == STANDARD
