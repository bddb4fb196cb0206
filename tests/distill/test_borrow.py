"""Your own videos: ``--dataset folder`` has no preset rows, so it borrows the nearest one (by IPC, then clip
shape and class count), says which, records it in MLflow, and runs with no learning-rate flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from raydd.distill.__main__ import main
from raydd.distill.borrow import nearest_row, shape_distance
from raydd.distill.presets import TABLES
from raydd.prepare import PrepareConfig, prepare
from tests.data.videos import folder_tree


def test_the_nearest_row_is_chosen_by_ipc_then_shape_and_class_count() -> None:
    # 16 x 112 x 112 clips: MiniUCF's and HMDB51's shape; 50 classes is MiniUCF's count, 51 HMDB51's.
    assert nearest_row("dm", "naive", 1, (16, 112, 112), 50).name == "miniucf/ipc1"
    assert nearest_row("dm", "naive", 5, (16, 112, 112), 51).name == "hmdb51/ipc5"
    assert nearest_row("mtt", "static-dynamic", 1, (8, 64, 64, 3), 300).name == "k400/ipc1"  # 400 is nearer than 174
    assert nearest_row("mtt", "static-dynamic", 1, (8, 64, 64), 150).name == "ssv2/ipc1"
    small = nearest_row("dm", "static-dynamic", 1, (8, 32, 32), 3)
    assert small.name == "builtin/ipc1" and small.fields == TABLES[("dm", "static-dynamic", "builtin", 1)]
    assert small.distance == pytest.approx(shape_distance((8, 32, 32, 3), (8, 32, 32, 10)))
    # IPC first: builtin has IPC 10 rows, the paper's datasets stop at 5.
    assert nearest_row("dm", "naive", 10, (16, 112, 112), 50).name == "builtin/ipc10"
    assert nearest_row("dm", "naive", 3, (16, 112, 112), 50).name == "miniucf/ipc5"  # |ln 3/5| < |ln 3/1|
    assert nearest_row("dc", "naive", 1, (16, 112, 112), 50).name == "builtin/ipc1"  # DC has builtin rows only
    assert shape_distance((8, 32, 32, 10), (16, 16, 32, 20)) == pytest.approx(3 * 0.6931471805599453)


@pytest.mark.usefixtures("ray_cluster", "mlflow_in_each_store")
@pytest.mark.slow
def test_a_folder_dataset_distils_with_no_lr_flags_and_says_which_preset_it_borrowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = folder_tree(tmp_path / "videos", classes=("cat", "dog", "eel"), per_class=4)
    store = str(tmp_path / "store")
    prepare(PrepareConfig(dataset="folder", source=str(source), store=store, frames=4, height=16, width=16))
    tiny = ["--iterations", "2", "--checkpoint-every", "2", "--network-width", "8", "--batch-real", "2"]
    tiny += ["--eval-runs", "0"]
    assert main(["--store", store, "--dataset", "folder", *tiny]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("preset: ")]
    assert line.startswith("preset: folder has no preset of its own; borrowed dm static-dynamic builtin IPC 1 ")
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("raydd-distill").experiment_id])
    params = run.data.params
    builtin = TABLES[("dm", "static-dynamic", "builtin", 1)]
    assert params["preset.borrowed_from"] == "builtin/ipc1"
    assert float(params["preset.lr_dynamic"]) == builtin["lr_dynamic"]
    assert float(params["preset.lr_hal"]) == builtin["lr_hal"]
    assert (Path(store) / "distilled" / "folder").is_dir()
    # Naive distillation borrows the naive row.
    assert main(["--store", store, "--dataset", "folder", "--paradigm", "naive", "--ipc", "2", *tiny]) == 0
    assert "borrowed dm naive builtin IPC 1 " in capsys.readouterr().out
