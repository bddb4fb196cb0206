"""``python -m raydd.distill`` under Ray Train on a tiny prepared dataset: data-parallel workers, a killed
worker resumed in the same command and by a re-run, stage 1 reuse, an S3 store, and the MLflow run."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient

from raydd.config import parse_config, to_dict
from raydd.distill.__main__ import main
from raydd.distill.driver import PRESET_FIELDS
from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import resolve_presets
from raydd.distilled_set import load_distilled, read_tensor_shard
from raydd.experts.__main__ import main as experts_main
from raydd.faults import MARKERS
from raydd.prepare import PrepareConfig, prepare
from raydd.storage import Location, list_names, resolve
from raydd.tracking import flatten
from tests.conftest import store_holding

pytestmark = [pytest.mark.usefixtures("ray_cluster", "mlflow_in_each_store"), pytest.mark.slow]

SMALL = dict(frames=4, height=16, width=16)
# DM, naive, 4 iterations with checkpoints after iterations 2 and 4: the uninterrupted reference run. The large
# lr moves the videos far enough from their initial real clips for the comparisons below to mean something.
NAIVE = [
    "--method",
    "dm",
    "--paradigm",
    "naive",
    "--iterations",
    "4",
    "--checkpoint-every",
    "2",
    "--network-width",
    "8",
    "--batch-real",
    "4",
    "--lr-img",
    "1000",
    "--eval-runs",
    "0",
]
# MTT static-dynamic: stage 1 matches the image ConvNet's trajectories (--static-method mtt: not the default), stage 2
# MiniC3D's.
MTT = [
    "--method",
    "mtt",
    "--static-method",
    "mtt",
    "--paradigm",
    "static-dynamic",
    "--iterations",
    "3",
    "--checkpoint-every",
    "3",
    "--max-start-epoch",
    "2",
    "--expert-epochs",
    "1",
    "--syn-steps",
    "2",
    "--static-per-ipc",
    "2",
    "--dynamic-per-ipc",
    "2",
]


@pytest.fixture(scope="module", autouse=True)
def _environment() -> Iterator[None]:
    """Ray Train polls its workers often so a tiny stage is not dominated by waiting."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
        yield


@pytest.fixture(scope="module")
def reference(tiny_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run: one worker, one sample per iteration, seed 0; returns its final state."""
    store = store_holding(tiny_datasets, tmp_path_factory.mktemp("reference"))
    assert main(["--store", store, *NAIVE]) == 0
    (states,) = _checkpoints(resolve(f"{store}/distill/runs")).values()
    assert [s["iteration"] for s in states] == [2, 4]
    return {"store": store, "state": states[-1]}


def _checkpoints(runs: Location) -> dict[str, list[dict[str, Any]]]:
    """Every run folder under STORE/distill/runs and its checkpoints' states, oldest first."""
    found = {}
    for run in list_names(runs):
        files = runs.fs.glob(f"{runs.child(run).path}/checkpoint_*/state.pt")
        states = [torch.load(io.BytesIO(runs.fs.cat_file(f)), map_location="cpu", weights_only=False) for f in files]
        found[run] = sorted(states, key=lambda state: state["iteration"])
    return found


def _only_run(store: str) -> tuple[Path, list[dict[str, Any]]]:
    ((name, states),) = _checkpoints(resolve(f"{store}/distill/runs")).items()
    return Path(store) / "distill" / "runs" / name, states


def _assert_same_run(state: dict[str, Any], reference: dict[str, Any]) -> None:
    assert state["iteration"] == 4 and len(state["history"]["loss"]) == 4
    torch.testing.assert_close(
        torch.tensor(state["history"]["loss"]), torch.tensor(reference["history"]["loss"]), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(state["synthetic"]["values"], reference["synthetic"]["values"], rtol=1e-5, atol=1e-6)


def _sha(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_workers_compute_what_one_worker_with_two_samples_computes(reference: dict[str, Any]) -> None:
    store = reference["store"]  # the reference's store: its run folder must not be mistaken for these runs'
    assert (
        main(
            [
                "--store",
                store,
                *NAIVE,
                "--workers",
                "2",
                "--worker-split",
                "samples",
                "--output",
                f"{store}/two-workers",
            ]
        )
        == 0
    )
    assert main(["--store", store, *NAIVE, "--samples-per-worker", "2", "--output", f"{store}/two-samples"]) == 0
    two_workers, two_samples = load_distilled(f"{store}/two-workers"), load_distilled(f"{store}/two-samples")
    assert two_workers.metadata["workers"] == 2 and two_samples.metadata["workers"] == 1
    assert torch.allclose(two_workers.videos_NCTHW, two_samples.videos_NCTHW, rtol=1e-5, atol=1e-6)
    assert torch.equal(two_workers.labels, two_samples.labels)
    # Two samples per iteration are not one: the reference (one worker, one sample) ends elsewhere.
    assert (two_workers.videos_NCTHW - reference["state"]["synthetic"]["values"]).abs().max() > 1e-3

    runs = _checkpoints(resolve(f"{store}/distill/runs"))
    assert len(runs) == 3  # a run with another worker count never resumes another's checkpoints
    finals = sorted((s[-1]["history"] for s in runs.values()), key=lambda history: history["samples"])
    assert [h["samples"] for h in finals] == [[1] * 4, [2] * 4, [2] * 4]
    assert finals[1]["loss"] == pytest.approx(finals[2]["loss"], rel=1e-5) and finals[0]["loss"] != pytest.approx(
        finals[1]["loss"], rel=1e-3
    )


def test_two_workers_split_by_classes_compute_what_one_worker_computes(
    tiny_datasets: Path, tmp_path: Path, reference: dict[str, Any]
) -> None:
    store = store_holding(tiny_datasets, tmp_path)
    assert main(["--store", store, *NAIVE, "--workers", "2"]) == 0  # --worker-split classes is the default
    _, states = _only_run(store)
    assert [s["iteration"] for s in states] == [2, 4] and states[-1]["history"]["samples"] == [1] * 4
    _assert_same_run(states[-1], reference["state"])
    (output,) = (Path(store) / "distilled" / "builtin").iterdir()
    distilled = load_distilled(str(output))
    assert distilled.metadata["workers"] == 2
    assert distilled.metadata["eval_preset"] == "standard"  # evaluation reads it from the artifact, not the catalog
    assert torch.equal(distilled.videos_NCTHW, states[-1]["synthetic"]["values"])


def test_a_killed_worker_is_restarted_from_the_last_checkpoint_within_the_command(
    tiny_datasets: Path, tmp_path: Path, reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_holding(tiny_datasets, tmp_path)
    monkeypatch.setenv("RAYDD_FAULTS", "fail_at_iteration=2")
    assert main(["--store", store, *NAIVE, "--max-failures", "1"]) == 0
    folder, states = _only_run(store)
    marker = folder / MARKERS / "fail_at_iteration-2"
    assert marker.read_bytes().startswith(b"fail_at_iteration fired at 2")  # the first attempt did die
    assert [s["iteration"] for s in states] == [2, 4]
    # The restart began at the first attempt's checkpoint: iterations 1-2 were saved before the fault, 3-4 after.
    assert states[0]["saved_at"] < marker.stat().st_mtime < states[1]["saved_at"]
    assert states[1]["history"]["seconds"][:2] == states[0]["history"]["seconds"]
    _assert_same_run(states[-1], reference["state"])
    (output,) = (Path(store) / "distilled" / "builtin").iterdir()
    assert torch.equal(load_distilled(str(output)).videos_NCTHW, states[-1]["synthetic"]["values"])


def test_a_failed_command_resumes_when_run_again(
    tiny_datasets: Path,
    tmp_path: Path,
    reference: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = store_holding(tiny_datasets, tmp_path)
    monkeypatch.setenv("RAYDD_FAULTS", "fail_at_iteration=2")
    command = ["--store", store, *NAIVE, "--max-failures", "0"]
    capsys.readouterr()
    assert main(command) == 1
    captured = capsys.readouterr()
    (error,) = [
        line for line in captured.err.splitlines() if line.startswith("raydd.distill:")
    ]  # one line among Ray's forwarded logs
    assert error.startswith("raydd.distill: error: stage naive failed") and error.endswith(
        "re-run the same command to resume from its last checkpoint"
    )
    assert not (Path(store) / "distilled").exists()
    folder, states = _only_run(store)
    assert [s["iteration"] for s in states] == [2] and len(states[0]["history"]["loss"]) == 2, (
        captured.out + captured.err
    )

    assert main(command) == 0  # the marker is there: this attempt runs through
    _, resumed = _only_run(store)
    final = resumed[-1]
    _assert_same_run(final, reference["state"])
    # Iterations 1-2 were not run again: their timings are the ones the failed command checkpointed.
    assert final["history"]["seconds"][:2] == states[0]["history"]["seconds"]
    (output,) = (Path(store) / "distilled" / "builtin").iterdir()
    assert torch.equal(load_distilled(str(output)).videos_NCTHW, final["synthetic"]["values"])


@pytest.fixture(scope="module")
def mtt_store(tiny_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with tiny experts (ConvNet and MiniC3D) and one static-dynamic MTT run, evaluated once."""
    store = store_holding(tiny_datasets, tmp_path_factory.mktemp("mtt"))
    for model in ("convnet", "minic3d"):
        assert (
            experts_main(
                [
                    "--store",
                    store,
                    "--model",
                    model,
                    "--num-experts",
                    "2",
                    "--epochs",
                    "3",
                    "--width",
                    "8",
                    "--batch-size",
                    "64",
                ]
            )
            == 0
        )
    argv = ["--store", store, *MTT, "--eval-runs", "1", "--eval-epochs", "2"]
    assert main(argv) == 0
    config, _ = parse_config(DistillConfig, argv, "raydd.distill")
    (static,) = (Path(store) / "distill" / "static" / "builtin").iterdir()
    (output,) = (Path(store) / "distilled" / "builtin").iterdir()
    runs = {name.split("-")[2]: states[-1] for name, states in _checkpoints(resolve(f"{store}/distill/runs")).items()}
    assert sorted(runs) == ["dynamic", "static"]
    return {"store": store, "config": config, "static": static, "output": output, "final_states": runs}


def test_stage_one_is_reused_when_only_stage_two_changes_and_skipped_with_static(
    mtt_store: dict[str, Any], tiny_datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, static = mtt_store["store"], mtt_store["static"]
    images, labels = read_tensor_shard(resolve(str(static)), "static.arrow")
    assert images.shape == (20, 3, 16, 16) and torch.equal(labels, torch.arange(10).repeat_interleave(2))
    before = {name: _sha(static / name) for name in os.listdir(static)}
    first, _ = read_tensor_shard(resolve(str(mtt_store["output"])), "static.arrow")
    assert torch.equal(first, images)  # stage 2 keeps stage 1's images frozen

    capsys.readouterr()
    assert main(["--store", store, *MTT, "--lr-hal", "1e-3", "--eval-runs", "0"]) == 0
    out = capsys.readouterr().out
    assert f"stage 1: reusing the still images at {static}" in out and "stage static:" not in out
    assert {name: _sha(static / name) for name in os.listdir(static)} == before
    outputs = sorted((Path(store) / "distilled" / "builtin").iterdir())
    assert len(outputs) == 2
    second = next(o for o in outputs if o != mtt_store["output"])
    assert load_distilled(str(second)).metadata["preset"]["lr_hal"] == 1e-3
    assert torch.equal(read_tensor_shard(resolve(str(second)), "static.arrow")[0], images)

    # --static URI: another store with no ConvNet experts and no stage 1 of its own.
    other = store_holding(tiny_datasets, tmp_path)
    minic3d = f"{store}/experts/builtin/minic3d"
    assert main(["--store", other, *MTT, "--static", str(static), "--experts", minic3d, "--eval-runs", "0"]) == 0
    assert "stage static:" not in capsys.readouterr().out
    assert not (Path(other) / "distill" / "static").exists()
    assert [name.split("-")[2] for name in os.listdir(Path(other) / "distill" / "runs")] == ["dynamic"]
    (third,) = (Path(other) / "distilled" / "builtin").iterdir()
    assert torch.equal(read_tensor_shard(resolve(str(third)), "static.arrow")[0], images)
    assert load_distilled(str(third)).videos_NCTHW.shape == (20, 3, 4, 16, 16)


def test_an_s3_store_holds_the_checkpoints_and_the_artifact(
    tiny_datasets: Path, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: dict[str, Any]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    store = f"{s3_bucket}/store"
    prepare(PrepareConfig(store=store, **SMALL))
    assert main(["--store", store, *NAIVE]) == 0
    ((name, states),) = _checkpoints(resolve(f"{store}/distill/runs")).items()
    assert [s["iteration"] for s in states] == [2, 4]
    _assert_same_run(states[-1], reference["state"])
    (output,) = list_names(resolve(f"{store}/distilled/builtin"))
    uri = f"{store}/distilled/builtin/{output}"
    assert list_names(resolve(uri)) == ["manifest.json", "videos.arrow"]
    distilled = load_distilled(uri)
    assert (
        torch.equal(distilled.videos_NCTHW, states[-1]["synthetic"]["values"])
        and distilled.dataset_uri == f"{store}/datasets/builtin"
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("raydd-distill").experiment_id])
    assert run.data.tags["raydd.output"] == uri


def test_the_mlflow_run_records_config_losses_storage_preview_and_evaluation(mtt_store: dict[str, Any]) -> None:
    store, config = mtt_store["store"], mtt_store["config"]
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("raydd-distill")
    (run,) = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`raydd.method` = 'mtt-static-dynamic' and params.eval_runs = '1'",
    )
    params = run.data.params
    assert run.info.status == "FINISHED"
    # The run flags as given (unset ones left out, never "null"), and the preset once, as the run resolved it.
    flags = {k: v for k, v in flatten(to_dict(config)).items() if k not in PRESET_FIELDS}
    assert {k: v for k, v in params.items() if not k.startswith(("preset.", "static_preset.", "stage1."))} == flags
    assert "null" not in params.values() and not PRESET_FIELDS & set(params)
    preset = resolve_presets(config).run
    assert {k[len("preset.") :]: v for k, v in params.items() if k.startswith("preset.")} == flatten(preset.to_dict())
    assert params["method"] == "mtt" and params["preset.iterations"] == "3" and params["preset.syn_steps"] == "2"
    given = sorted(name for flag in MTT if (name := flag[2:].replace("-", "_")) in PRESET_FIELDS)
    assert given and run.data.tags["raydd.preset_flags"] == ",".join(given)  # which preset fields the flags set
    # The run's name ends with the hash that names the distilled set's folder (and is tagged, to find the run again).
    settings_hash = mtt_store["output"].name.rsplit("-", 1)[1]
    assert run.info.run_name == f"mtt-static-dynamic-ipc1-builtin-{settings_hash}"
    assert run.data.tags["raydd.settings_hash"] == settings_hash
    # The closing evaluation is a run nested under it, in the same experiment.
    (evaluation,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
    )
    assert evaluation.data.params["data"] == str(mtt_store["output"]) and evaluation.data.params["runs"] == "1"
    assert evaluation.data.metrics["top1_mean"] == pytest.approx(run.data.metrics["eval/top1_mean"])

    for stage, state in mtt_store["final_states"].items():  # one value per iteration, as the stage's history has them
        history = sorted(client.get_metric_history(run.info.run_id, f"{stage}/loss"), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 1, 2] and len(state["history"]["loss"]) == 3
        assert [m.value for m in history] == pytest.approx(state["history"]["loss"], rel=1e-6)
    manifest = load_distilled(str(mtt_store["output"])).metadata
    assert (
        run.data.metrics["storage_ratio"]
        == pytest.approx(manifest["storage_ratio"])
        == manifest["storage_values"] / (10 * 3 * 4 * 16 * 16)
    )
    assert run.data.metrics["storage_bytes"] == manifest["storage_bytes"]
    assert (
        run.data.tags["raydd.output"] == str(mtt_store["output"])
        and run.data.tags["raydd.method"] == "mtt-static-dynamic"
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"preview.gif", "stills.png", "distilled_set.json", "config.json"} <= artifacts
    preview = client.download_artifacts(run.info.run_id, "preview.gif", str(Path(store) / "downloaded"))
    assert Path(preview).read_bytes()[:6] == b"GIF89a"
    assert (
        0 <= run.data.metrics["eval/top1_mean"] <= 100
        and run.data.metrics["eval/top1_std"] == 0
        and "eval/top5_mean" in run.data.metrics
    )
