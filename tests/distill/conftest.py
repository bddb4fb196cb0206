"""Fixtures shared by the MTT tests."""

from __future__ import annotations

import pytest

from raydd.distill.methods.mtt import ExpertBank

from .tiny_store import write_experts


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> ExpertBank:
    """Tiny MiniC3D expert trajectories of 3 epochs (tiny_store's shape)."""
    folder = tmp_path_factory.mktemp("experts")
    write_experts(str(folder), epochs=3)
    return ExpertBank(str(folder), make_them="python -m raydd.experts")
