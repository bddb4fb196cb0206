"""One evaluation section: declared once, read by evaluate as it is and by distill, pipeline and tune as --eval-*,
with one set of defaults; the renamed flags, and their old spellings for one release."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from raydd.config import build_parser, parse_config, to_dict
from raydd.distill.driver import run_params
from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import resolve_presets
from raydd.evaluation.job import EvalConfig
from raydd.evaluation.section import EvalSection
from raydd.pipeline import PipelineConfig
from raydd.tuning.sweep_config import TuneConfig

SECTION = {field.name: field.default for field in dataclasses.fields(EvalSection)}


def test_every_command_that_evaluates_reads_the_one_section_with_its_defaults() -> None:
    assert SECTION == {"runs": 5, "epochs": None, "model": "minic3d", "lr_schedule": "auto"}
    assert {name: getattr(EvalConfig(), name) for name in SECTION} == SECTION
    assert DistillConfig().unprefixed() == SECTION  # the closing evaluation: raydd.evaluate's defaults
    # The pipeline's own two, as the main job's table was made (100 epochs, one standard schedule for every row).
    assert PipelineConfig().unprefixed() == {
        "runs": 5,
        "epochs": 100,
        "lr_schedule": "standard",
    }
    assert TuneConfig().unprefixed() == {"epochs": 100}  # a trial's short evaluation
    helps = {field.name: field.metadata["help"] for field in dataclasses.fields(EvalSection)}
    for config in (DistillConfig, PipelineConfig, TuneConfig):
        for field in dataclasses.fields(config):
            if field.name.startswith("eval_"):
                assert field.metadata["help"].startswith(helps[field.name[len("eval_") :]]), field.name


@pytest.mark.parametrize(
    ("config", "prog", "new", "old", "value", "field"),
    [
        (DistillConfig, "raydd.distill", "--worker-split", "--split", "samples", "worker_split"),
        (EvalConfig, "raydd.evaluate", "--lr-schedule", "--preset", "frepo", "lr_schedule"),
        (PipelineConfig, "raydd.pipeline", "--eval-lr-schedule", "--eval-preset", "frepo", "eval_lr_schedule"),
        (DistillConfig, "raydd.distill", "--preset-file", "--preset", "tuned.json", "preset_file"),
    ],
)
def test_a_renamed_flag_works_and_its_old_spelling_warns_once(
    config: type, prog: str, new: str, old: str, value: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert getattr(parse_config(config, [new, value], prog)[0], field) == value
    assert capsys.readouterr().err == ""
    assert getattr(parse_config(config, [old, value], prog)[0], field) == value
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"{prog}: warning: {old} is deprecated and goes in the next release; use {new}"
    text = build_parser(config, prog, "").format_help()
    assert new in text and f"{old} " not in text.replace(new, "")  # the old spelling is not documented


def test_prepare_keeps_split_as_the_official_split() -> None:
    from raydd.data.preparation import PrepareConfig

    assert parse_config(PrepareConfig, ["--split", "2"], "raydd.prepare")[0].split == 2


def test_the_run_params_name_the_flags_as_given_under_the_new_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preset_file = tmp_path / "tuned.json"
    preset_file.write_text(json.dumps({"preset": {"lr_hal": 0.25}}))
    argv = ["--split", "samples", "--preset", str(preset_file), "--eval-lr-schedule", "standard"]
    config = parse_config(DistillConfig, argv, "raydd.distill")[0]
    presets = resolve_presets(config)
    params = run_params(config, presets.run, presets.stage1, presets.stage1_method, None)
    given = {k: v for k, v in to_dict(config).items() if v is not None and k not in presets.run.to_dict()}
    logged = {k: v for k, v in params.items() if k not in ("preset", "stage1.method") and "preset." not in k}
    assert logged == given
    assert params["worker_split"] == "samples" and params["preset_file"] == str(preset_file)
    assert params["eval_lr_schedule"] == "standard" and params["eval_runs"] == 5 and "split" not in params
    assert params["preset"]["lr_hal"] == 0.25
