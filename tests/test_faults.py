"""Test faults come from $RAYDD_FAULTS only, and a malformed value is refused in one line."""

from __future__ import annotations

import pytest

from raydd.errors import RayddError
from raydd.faults import fault


def test_unset_faults_are_minus_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYDD_FAULTS", raising=False)
    assert fault("fail_shard") == -1


def test_faults_are_read_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYDD_FAULTS", "fail_shard=2, fail_at_iteration=7")
    assert (fault("fail_shard"), fault("fail_at_iteration"), fault("fail_expert")) == (2, 7, -1)


@pytest.mark.parametrize("value", ["fail_shard", "fail_shard=x", "explode=1"])
def test_a_malformed_value_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RAYDD_FAULTS", value)
    with pytest.raises(RayddError, match="RAYDD_FAULTS=.*name=integer") as error:
        fault("fail_shard")
    assert "\n" not in str(error.value)
