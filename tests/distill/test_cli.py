"""The command line of ``python -m raydd.distill``: its flags, the one-line refusals that name the command
to run first, and a repeated command that has nothing to do."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import os
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raydd.config import flag_name
from raydd.distill.__main__ import main
from raydd.distill.presets import Preset, table_preset
from raydd.distill.settings import DistillConfig
from tests.conftest import store_holding

pytestmark = pytest.mark.usefixtures("ray_cluster", "mlflow_in_each_store")


@pytest.fixture
def store(tiny_datasets: Path, tmp_path: Path) -> str:
    """A fresh store holding the prepared built-in dataset and nothing else (no experts)."""
    return store_holding(tiny_datasets, tmp_path / "store")


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's one error line (Ray may forward its workers' late log lines to the same stderr)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("raydd.distill:")]
    assert len(lines) == 1 and lines[0].startswith("raydd.distill: error: "), err
    return lines[0]


def test_print_config_prints_every_flag_with_the_preset_resolved(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--method", "mtt", "--paradigm", "naive", "--lr-dynamic", "3", "--workers", "2", "--no-learn-lr"]
    assert main(["--print-config", *argv, "--hallucinator", "convtranspose"]) == 0
    printed = json.loads(capsys.readouterr().out)
    fields = {field.name for field in dataclasses.fields(DistillConfig)}
    assert set(printed) == fields and set(Preset.__dataclass_fields__) < fields  # run flags + one per preset field
    assert (
        printed["method"] == "mtt"
        and printed["paradigm"] == "naive"
        and printed["workers"] == 2
        and printed["experiment"] == "raydd-distill"
    )
    assert printed["lr_dynamic"] == 3.0 and printed["learn_lr"] is False and printed["hallucinator"] == "convtranspose"
    table = table_preset("mtt", "naive", "builtin", 1)
    assert table is not None and printed["iterations"] == table.iterations and printed["lr_img"] == table.lr_img
    assert printed["syn_steps"] == table.syn_steps and printed["lr_teacher"] == table.lr_teacher
    assert "fail_at_iteration" not in printed and printed["eval_runs"] == 5  # test faults: $RAYDD_FAULTS


@pytest.mark.parametrize("dataset", ["k400", "builtin"])
def test_print_config_resolves_table_then_preset_file_then_flags(
    dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = table_preset("dm", "static-dynamic", dataset, 1)
    assert table is not None
    assert main(["--print-config", "--dataset", dataset]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {name: printed[name] for name in Preset.__dataclass_fields__} == table.to_dict()
    for name in ("iterations", "batch_real", "lr_static", "lr_dynamic", "lr_hal"):
        assert printed[name] is not None, name  # what --print-config printed as null before
    assert printed["static_method"] == "dm" and "stage1_preset" not in printed  # stage 1 runs the same preset

    preset_file = tmp_path / "tuned.json"
    preset_file.write_text(json.dumps({"preset": {"iterations": table.iterations + 7, "lr_hal": 0.25}}))
    assert main(["--print-config", "--dataset", dataset, "--preset-file", str(preset_file), "--lr-hal", "0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["iterations"] == table.iterations + 7 and printed["lr_hal"] == 0.5  # the flag beats the file
    assert printed["batch_real"] == table.batch_real and printed["preset_file"] == str(preset_file)

    # Stage 1 learnt by another method: the fields its own row gives stage 1 are printed beside the run's preset.
    assert main(["--print-config", "--dataset", dataset, "--static-method", "mtt"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stage1 = table_preset("mtt", "static-dynamic", dataset, 1)
    assert stage1 is not None and printed["static_method"] == "mtt"
    assert printed["stage1_preset"]["lr_static"] == stage1.lr_static != printed["lr_static"]


def test_print_config_without_a_preset_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print-config", "--method", "frepo", "--dataset", "k400"]) == 1
    assert "no preset for frepo static-dynamic on k400 at IPC 1" in _one_error_line(capsys)


def _help_sections(text: str) -> dict[str, str]:
    """``--help``'s sections by title ("run options", ...), each the text up to the next one."""
    parts = re.split(r"^(\w[\w ]* options)[^\n]*:$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_help_is_grouped_into_run_preset_and_advanced(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    sections = _help_sections(capsys.readouterr().out)
    assert list(sections) == ["run options", "preset options", "advanced options"]
    flags = {title: set(re.findall(r"^  (--[a-z-]+)", body, flags=re.MULTILINE)) for title, body in sections.items()}
    assert {"--dataset", "--method", "--paradigm", "--ipc", "--store", "--print-config", "--version"} <= flags[
        "run options"
    ]
    preset_flags = {flag_name(name) for name in Preset.__dataclass_fields__}
    assert flags["preset options"] == preset_flags | {"--preset-file"}  # every preset field, and the preset file
    advanced = {"--ray-address", "--worker-split", "--checkpoint-every", "--experiment", "--use-gpu", "--eval-epochs"}
    assert advanced <= flags["advanced options"] and "--eval-runs" in flags["run options"]
    every = {flag_name(field.name) for field in dataclasses.fields(DistillConfig)}
    assert set().union(*flags.values()) >= every and not flags["run options"] & flags["advanced options"]
    text = " ".join(sections["preset options"].split())  # argparse wraps lines
    assert "static-dynamic stage 2: lr of the dynamic memories (default: the preset's)" in text
    assert "--fail-at-iteration" not in " ".join(sections.values())


@pytest.mark.parametrize("command", ["raydd.evaluate", "raydd.pipeline", "raydd.experts"])
def test_every_command_on_the_config_parser_has_grouped_help(command: str) -> None:
    module = importlib.import_module(command if command == "raydd.evaluate" else f"{command}.__main__")
    with pytest.raises(SystemExit) as exited, contextlib.redirect_stdout(io.StringIO()) as out:
        module.main(["--help"])
    assert exited.value.code == 0
    sections = _help_sections(out.getvalue())
    assert "run options" in sections and "--ray-address" in sections["advanced options"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ipc", "0"], "--ipc: expected a positive integer"),
        (["--momentum", "1"], r"--momentum: expected a number in \[0, 1\)"),
        (["--lr-hal", "-1"], "--lr-hal: expected a positive number"),
        (["--max-failures", "-1"], "--max-failures: expected 0 or a positive integer"),
        (["--hallucinator", "deconv"], "argument --hallucinator: invalid choice: 'deconv'"),
        (["--method", "kip"], "argument --method: invalid choice: 'kip'"),
    ],
)
def test_a_bad_flag_is_a_usage_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    line = _one_error_line(capsys)
    assert line.endswith("(see --help)")
    assert re.search(message, line), line


def test_an_unprepared_dataset_names_the_prepare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", str(tmp_path), "--eval-runs", "0"]) == 1
    line = _one_error_line(capsys)
    assert (
        f"no prepared dataset at {tmp_path}/datasets/builtin: run `python -m raydd.prepare" in line
        and line.endswith("--dataset NAME --store STORE` first")
    )
    assert not (tmp_path / "distill").exists() and not (tmp_path / "distilled").exists()


def test_mtt_without_experts_names_the_experts_command(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--store", store, "--method", "mtt", "--paradigm", "naive", "--eval-runs", "0"]) == 1
    line = _one_error_line(capsys)
    assert f"no expert trajectories at {store}/experts/builtin/minic3d" in line
    assert line.endswith(f"run `python -m raydd.experts --dataset builtin --model minic3d --store {store}` first")
    assert (
        main(["--store", store, "--method", "mtt", "--experts", str(tmp_path / "elsewhere"), "--eval-runs", "0"]) == 1
    )
    assert f"expert trajectories at {tmp_path / 'elsewhere'}" in _one_error_line(capsys)
    assert (
        not (Path(store) / "distill").exists() and not (Path(store) / "mlflow.db").exists()
    )  # refused before any work


def test_a_dataset_without_a_preset_asks_for_the_learning_rates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The preset is resolved before the dataset is opened: k400 is not prepared here, and that is not the complaint.
    assert main(["--store", str(tmp_path), "--method", "frepo", "--dataset", "k400"]) == 1
    line = _one_error_line(capsys)
    assert "no preset for frepo static-dynamic on k400 at IPC 1" in line and line.endswith(
        "pass --lr-static LR --lr-dynamic LR --lr-hal LR or --preset-file FILE"
    )
    assert "python -m raydd.prepare" not in line
    assert main(["--store", str(tmp_path), "--method", "frepo", "--dataset", "k400", "--paradigm", "naive"]) == 1
    line = _one_error_line(capsys)
    assert "--lr-img LR" in line and "--lr-dynamic" not in line
    # With the learning rates given, the next thing missing is the dataset itself.
    assert (
        main(
            [
                "--store",
                str(tmp_path),
                "--method",
                "frepo",
                "--dataset",
                "k400",
                "--lr-static",
                "0.01",
                "--lr-dynamic",
                "0.01",
                "--lr-hal",
                "0.001",
            ]
        )
        == 1
    )
    assert "python -m raydd.prepare" in _one_error_line(capsys)


@pytest.mark.slow
def test_a_second_identical_run_has_nothing_to_do(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    command = [
        "--store",
        store,
        "--method",
        "dm",
        "--paradigm",
        "naive",
        "--iterations",
        "2",
        "--checkpoint-every",
        "2",
        "--network-width",
        "8",
        "--batch-real",
        "4",
        "--eval-runs",
        "0",
    ]
    assert main(command) == 0
    (output,) = (Path(store) / "distilled" / "builtin").iterdir()
    assert f"-> {output}" in capsys.readouterr().out
    files = {
        path: (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(Path(store).rglob("*"))
        if path.is_file() and "mlflow" not in str(path)
    }
    assert {p.name for p in files if p.parent == output} == {"manifest.json", "videos.arrow"}

    assert main(command) == 0
    captured = capsys.readouterr()
    assert f"{output} already holds this distilled set: nothing to do (--overwrite distils it again)" in captured.err
    assert "stage naive" not in captured.out
    again = {
        path: (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(Path(store).rglob("*"))
        if path.is_file() and "mlflow" not in str(path)
    }
    assert again == files  # neither the artifact nor the checkpoints were touched
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    assert (
        len(client.search_runs([client.get_experiment_by_name("raydd-distill").experiment_id])) == 1
    )  # and no second MLflow run
    assert len(os.listdir(Path(store) / "distill" / "runs")) == 1


@pytest.mark.slow
def test_a_run_reads_its_preset_file_once_at_the_edge(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preset is resolved once, before the engine starts: the file is gone afterwards and the run still works."""
    import raydd.distill.__main__ as command

    preset_file = tmp_path / "tuned.json"
    preset_file.write_text(json.dumps({"preset": {"iterations": 2, "network_width": 8, "batch_real": 4}}))
    resolved = []

    def resolve_then_delete(config: DistillConfig) -> object:
        resolved.append(command_resolve(config))
        preset_file.unlink()
        return resolved[-1]

    command_resolve = command.resolve_presets
    monkeypatch.setattr(command, "resolve_presets", resolve_then_delete)
    argv = ["--store", store, "--preset-file", str(preset_file), "--checkpoint-every", "2", "--eval-runs", "0"]
    assert main(argv) == 0
    assert len(resolved) == 1 and resolved[0].run.iterations == 2 and not preset_file.exists()
