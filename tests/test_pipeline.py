"""README command (a), ``python -m raydd.pipeline``, end to end on the built-in dataset at a tiny budget: prepare,
both distillations, the four evaluated rows and the closing table."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from raydd.data import open_prepared
from raydd.data.layouts import TEST, TRAIN
from raydd.pipeline.__main__ import main
from tests.data.videos import folder_tree

pytestmark = [pytest.mark.usefixtures("ray_cluster", "mlflow_in_each_store"), pytest.mark.slow]


def test_the_main_job_runs_end_to_end_and_ends_with_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    argv = ["--store", str(store), "--iterations", "2", "--eval-runs", "1", "--eval-epochs", "1"]
    assert main(argv) == 0
    table = capsys.readouterr().out.split("training set")[-1].splitlines()
    rows = {line[:22].strip(): line[22:].split() for line in table[1:] if line.strip()}
    assert list(rows) == ["dm static-dynamic", "dm naive", "stills only (stage 1)", "random real clips"]
    storage = {name: float(cells[0].rstrip("x")) for name, cells in rows.items()}
    assert storage["stills only (stage 1)"] == 0.25 and storage["dm naive"] == storage["random real clips"] == 1.0
    assert 0.25 < storage["dm static-dynamic"] < 1.0  # stills plus small dynamic memories and H
    assert rows["random real clips"][-1] == "+0.0"  # the gain column is against random real clips
    assert sorted(path.name.split("-ipc1-")[0] for path in (store / "distilled" / "builtin").iterdir()) == [
        "dm-naive",
        "dm-static-dynamic",
    ]
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    evaluations = client.search_runs([client.get_experiment_by_name("raydd-evaluate").experiment_id])
    assert len(evaluations) == 4
    assert {run.data.params["raydd.protocol"] for run in evaluations} == {"reference-inductive"}
    assert {run.data.params["gpus_per_run"] for run in evaluations} == {"0.0"}  # a CPU-only cluster


def test_a_users_folder_runs_end_to_end_at_the_clip_shape_and_split_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pipeline prepares the folder itself, at ``--frames/--height/--width`` and ``--test-fraction``: no
    separate ``raydd.prepare`` first."""
    source = folder_tree(tmp_path / "videos")  # 3 classes of 4 clips
    store = tmp_path / "store"
    shape = ["--frames", "4", "--height", "16", "--width", "16", "--test-fraction", "0.5"]
    argv = ["--dataset", "folder", "--source", str(source), "--store", str(store), *shape]
    assert main([*argv, "--iterations", "1", "--eval-runs", "1", "--eval-epochs", "1"]) == 0
    dataset = open_prepared(str(store / "datasets" / "folder"))
    assert (dataset.spec.num_frames, dataset.spec.height, dataset.spec.width) == (4, 16, 16)
    assert dataset.manifest.metadata["clips"] == {TRAIN: 6, TEST: 6}  # half of each class held out
    assert "random real clips" in capsys.readouterr().out


def test_a_bad_clip_shape_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_code:
        main(["--store", str(tmp_path / "store"), "--frames", "0"])
    assert exit_code.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--frames: expected a positive integer" in line
    assert not (tmp_path / "store").exists()
