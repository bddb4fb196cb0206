"""The shared config sections: the store default is read when a command parses its flags, --version."""

from __future__ import annotations

import dataclasses

import pytest

import raydd
from raydd.config import SeedSection, StoreSection, parse_config
from raydd.layout import FALLBACK_STORE, StoreLayout


@dataclasses.dataclass(frozen=True)
class _Config(StoreSection, SeedSection):
    pass


def test_an_unset_store_is_raydd_store_read_at_parse_time(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("RAYDD_STORE", raising=False)
    config, _ = parse_config(_Config, [], "raydd.test")
    assert config.store == FALLBACK_STORE
    monkeypatch.setenv("RAYDD_STORE", str(tmp_path))  # set after every module was imported
    config, _ = parse_config(_Config, ["--seed", "3"], "raydd.test")
    assert (config.store, config.seed) == (str(tmp_path), 3)
    assert StoreLayout.of(config.store).dataset("k400").path == str(tmp_path / "datasets" / "k400")
    config, _ = parse_config(_Config, ["--store", "s3://bucket/x"], "raydd.test")
    assert config.store == "s3://bucket/x"


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(_Config, ["--version"], "raydd.test")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"raydd.test (raydd {raydd.__version__})"
