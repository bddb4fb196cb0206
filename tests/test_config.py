"""The command-line surface: every field documented, bad values rejected in one line, --print-config."""

from __future__ import annotations

import dataclasses
import json

import pytest

from raydd.config import build_parser, flag_name
from raydd.prepare import PrepareConfig, main


def test_help_documents_every_field() -> None:
    text = build_parser(PrepareConfig, "raydd.prepare", "").format_help()
    for field in dataclasses.fields(PrepareConfig):
        assert flag_name(field.name) in text
        assert field.metadata["help"], f"{field.name} has no help text"
    assert "--print-config" in text


def test_print_config_prints_the_resolved_config_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dataset", "k400", "--source", "s3://b/k400", "--frames", "4", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["dataset"] == "k400"
    assert printed["frames"] == 4
    assert printed["source"] == "s3://b/k400"
    assert set(printed) == {field.name for field in dataclasses.fields(PrepareConfig)}


@pytest.mark.parametrize(
    ("argv", "flag", "hint"),
    [
        (["--dataset", "imagenet"], "--dataset", "builtin"),
        (["--frames", "0"], "--frames", "positive integer"),
        (["--frames", "many"], "--frames", "invalid int"),
        (["--test-fraction", "1.5"], "--test-fraction", "[0, 1)"),
        (["--max-bad-fraction", "-0.1"], "--max-bad-fraction", "[0, 1]"),
        (["--split", "4"], "--split", "1, 2, 3"),
    ],
)
def test_invalid_values_fail_with_one_line_naming_the_flag(
    argv: list[str], flag: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert flag in error and hint in error


def test_config_is_frozen() -> None:
    config = PrepareConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dataset = "k400"  # type: ignore[misc]


def test_user_errors_print_one_line_and_exit_non_zero(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dataset", "folder", "--store", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "--source" in error
    assert list(tmp_path.iterdir()) == []
