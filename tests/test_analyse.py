"""``python -m raydd.analyse``: both studies end to end on a tiny prepared set, logged to a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from raydd.analyse import analyse, main
from raydd.analysis.study_config import AnalyseConfig
from raydd.analysis.temporal import frame_counts
from raydd.errors import RayddError
from tests.conftest import store_holding

pytestmark = pytest.mark.usefixtures("ray_cluster", "mlflow_in_each_store")


@pytest.fixture(scope="module")
def store(tiny_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return store_holding(tiny_datasets, tmp_path_factory.mktemp("analyse"))


def _run(store: str, experiment: str) -> tuple[MlflowClient, Run, set[str]]:
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    return client, run, artifacts


def _png(client: MlflowClient, run_id: str, name: str, tmp_path: Path) -> bytes:
    return Path(client.download_artifacts(run_id, name, str(tmp_path))).read_bytes()


def test_temporal_study_logs_its_table_and_plot(store: str, tmp_path: Path) -> None:
    config = AnalyseConfig(
        study="temporal",
        data=f"{store}/datasets/builtin",
        store=store,
        experiment="t-temporal",
        iterations=3,
        runs=2,
        epochs=2,
        width=8,
    )
    table = analyse(config)
    assert [row["frames"] for row in table] == [1, 2, 4]  # "all" on 4-frame clips
    assert all(0 <= row["top1_mean"] <= 100 and row["top1_std"] >= 0 for row in table)
    # The synthetic frames cost what they store and what autograd keeps for them: both grow with K.
    assert [row["stored_values"] for row in table] == [10 * 3 * 16 * 16 * k for k in (1, 2, 4)]
    assert table[0]["graph_mib"] < table[1]["graph_mib"] < table[2]["graph_mib"]
    client, run, artifacts = _run(store, "t-temporal")
    assert run.info.status == "FINISHED" and run.data.params["study"] == "temporal"
    assert run.data.tags["raydd.protocol"] == "reference-inductive" and run.data.tags["raydd.dataset"] == "builtin"
    assert {"temporal.json", "temporal.csv", "temporal.png", "config.json"} <= artifacts
    assert _png(client, run.info.run_id, "temporal.png", tmp_path).startswith(b"\x89PNG")
    assert run.data.metrics["frames4/top1_mean"] == pytest.approx(table[2]["top1_mean"])
    assert len(client.get_metric_history(run.info.run_id, "frames2/dm_loss")) == 3


def test_grouping_study_logs_classes_scores_and_agreement(store: str, tmp_path: Path) -> None:
    config = AnalyseConfig(
        study="grouping",
        data=f"{store}/datasets/builtin",
        store=store,
        experiment="t-grouping",
        runs=1,
        epochs=1,
        feature_epochs=1,
        width=8,
        batch_size=64,
    )
    table = analyse(config)
    assert len(table) == 10 and {row["dataset_group"] for row in table} == {"static", "dynamic"}
    assert (
        sum(row["hamming_group"] == "static" for row in table) == 5
        and sum(row["gain_group"] == "static" for row in table) == 5
    )
    assert all(0 < row["hamming"] < 1 for row in table)
    client, run, artifacts = _run(store, "t-grouping")
    assert {"grouping.json", "grouping.csv", "grouping.png"} <= artifacts
    assert _png(client, run.info.run_id, "grouping.png", tmp_path).startswith(b"\x89PNG")
    expected = sum(row["hamming_group"] == row["dataset_group"] for row in table) / 10
    assert run.data.metrics["hamming_agreement"] == pytest.approx(expected)
    csv_header = (
        Path(client.download_artifacts(run.info.run_id, "grouping.csv", str(tmp_path))).read_text().splitlines()[0]
    )
    assert csv_header.startswith("class,frame_top1,video_top1,gain,hamming")


def test_bad_input_is_one_line(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "nothing"), "--store", store]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("raydd.analyse: error: no prepared dataset at") and "raydd.prepare" in err
    assert (
        main(["--data", f"{store}/datasets/builtin", "--store", store, "--frames", "2,9", "--experiment", "t-bad"]) == 1
    )
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--frames 2,9" in err and "1 to 4" in err
    assert (
        MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db").get_experiment_by_name("t-bad") is None
    )  # refused before any run
    with pytest.raises(SystemExit):
        main(["--frames", "two"])
    assert "\n" not in capsys.readouterr().err.strip()


def test_frame_counts() -> None:
    assert frame_counts("all", 8) == (1, 2, 4, 8)
    assert frame_counts("all", 6) == (1, 2, 4, 6)
    assert frame_counts("4,1,4", 8) == (1, 4)
    with pytest.raises(RayddError, match="must be 1 to 8"):
        frame_counts("0,2", 8)


def test_data_defaults_to_the_builtin_dataset_of_the_store_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYDD_STORE", str(tmp_path / "elsewhere"))
    assert AnalyseConfig(store=str(tmp_path / "s")).with_store_defaults().data == f"{tmp_path}/s/datasets/builtin"
    assert AnalyseConfig().with_store_defaults().data == f"{tmp_path}/elsewhere/datasets/builtin"  # read at run time
