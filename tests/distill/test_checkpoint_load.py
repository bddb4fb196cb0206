"""Checkpoints are unpickled with weights_only=True: what a store holds can never run code on a worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raydd.distill.ray_train import load_state
from raydd.errors import RayddError


class _RunsCodeWhenUnpickled:
    def __reduce__(self):  # noqa: ANN204 - the shape of an attack: unpickling calls a function
        return (Path.touch, (Path(self.marker),))

    def __init__(self, marker: str) -> None:
        self.marker = marker


def test_a_state_of_tensors_and_numbers_loads(tmp_path: Path) -> None:
    state = {"iteration": 3, "synthetic": {"values": torch.ones(2, 3)}, "history": {"loss": [0.5, 0.25]}, "saved_at": 1.5}
    torch.save(state, tmp_path / "state.pt")
    loaded = load_state(tmp_path / "state.pt", torch.device("cpu"))
    assert loaded["iteration"] == 3 and loaded["history"]["loss"] == [0.5, 0.25]
    assert torch.equal(loaded["synthetic"]["values"], torch.ones(2, 3))


def test_a_state_that_would_run_code_is_refused_in_one_line_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    torch.save({"iteration": 1, "payload": _RunsCodeWhenUnpickled(str(marker))}, tmp_path / "state.pt")
    with pytest.raises(RayddError) as raised:
        load_state(tmp_path / "state.pt", torch.device("cpu"))
    assert "refused" in str(raised.value) and "\n" not in str(raised.value)
    assert not marker.exists()
