"""The method catalog (the registry of methods): what each method needs, asked of one table, not tested by name."""

from __future__ import annotations

import pytest
import torch

from raydd.distill.loop import LearningRate, build_optimizer
from raydd.distill.methods.catalog import ADAM, REGISTRY, SGD, method_info
from raydd.distill.presets import METHODS
from raydd.errors import RayddError
from raydd.evaluation.protocols import FREPO, STANDARD


def test_every_method_of_the_command_line_has_one_row() -> None:
    assert tuple(REGISTRY) == METHODS == ("dm", "mtt", "frepo", "dc")
    assert [m for m in METHODS if method_info(m).needs_experts] == ["mtt"]
    assert [m for m in METHODS if not method_info(m).reads_real] == ["mtt"]
    assert [m for m in METHODS if method_info(m).real_per_class] == ["dm", "dc"]


def test_frepo_learns_with_adam_and_is_evaluated_with_its_own_preset() -> None:
    assert {m: method_info(m).optimiser for m in METHODS} == {"dm": SGD, "mtt": SGD, "frepo": ADAM, "dc": SGD}
    assert {m: method_info(m).eval_preset for m in METHODS} == {
        "dm": STANDARD,
        "mtt": STANDARD,
        "frepo": FREPO,
        "dc": STANDARD,
    }
    parameter = torch.nn.Parameter(torch.zeros(2))
    adam = build_optimizer([LearningRate("lr_img", [parameter], 0.1)], kind=method_info("frepo").optimiser, momentum=0)
    sgd = build_optimizer([LearningRate("lr_img", [parameter], 0.1)], kind=method_info("dm").optimiser, momentum=0.5)
    assert isinstance(adam, torch.optim.Adam) and isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.5


def test_an_unknown_method_is_refused_in_one_line() -> None:
    with pytest.raises(RayddError, match="unknown distillation method 'kip': use one of dm, mtt, frepo, dc"):
        method_info("kip")
