"""Sweeps of ``python -m raydd.tune`` beyond the happy path, on the session's real local Ray cluster: ASHA
stopping a trial, an MTT sweep (it reads expert trajectories), and a sweep whose store is on the moto S3 server,
its Tune state written through raydd's own filesystem (s3fs) and resumed from there."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import s3fs
from mlflow import MlflowClient

from raydd.errors import RayddError
from raydd.layout import StoreLayout
from raydd.locations import resolve
from raydd.tune import TuneConfig, main
from raydd.tuning.ray_tune import arrow_filesystem
from raydd.tuning.sweep import sweep_presets, tune
from tests.conftest import store_holding
from tests.data.test_cache import Recording
from tests.distill.tiny_store import write_experts

pytestmark = pytest.mark.usefixtures("ray_cluster", "mlflow_in_each_store")

SMALL = dict(num_samples=2, max_concurrent=1, eval_epochs=2, network_width=8, batch_real=4)


@pytest.mark.slow
def test_asha_stops_a_trial_whose_loss_lags_at_the_grace_period(tiny_datasets: Path, tmp_path: Path) -> None:
    # One trial at a time: the first (the preset's lrs) runs all 6 iterations and sets the only value of ASHA's
    # rung at iteration 2; the second has lrs a million times the preset's, so after its first update every
    # pixel sits at the edge of the data's range and its loss at iteration 2 is far above the first's. ASHA
    # keeps a trial at a rung only if its loss is at most the 75th percentile of the rung's: it stops the second.
    store = store_holding(tiny_datasets, tmp_path)
    config = TuneConfig(
        store=store,
        iterations=6,
        grace_period=2,
        lr_dynamic_min=1.0,
        lr_dynamic_max=1e8,
        lr_hal_min=1e-5,
        lr_hal_max=1e3,
        **SMALL,
    )
    good, bad = {"lr_dynamic": 10.0, "lr_hal": 1e-4}, {"lr_dynamic": 1e7, "lr_hal": 1e2}
    result = tune(config, sweep_presets(config), starts=[good, bad])
    by_lr = {row.lr_dynamic: row for row in result.rows}
    assert (by_lr[10.0].status, by_lr[10.0].iterations) == ("DONE", 6)
    assert (by_lr[1e7].status, by_lr[1e7].iterations) == ("STOPPED", 2)  # from Tune's results: 2 of 6
    assert result.rows[0] is by_lr[10.0]  # the stopped trial has no score; the best is the finished one
    # Tune's own record of the stopped trial: its last result is at iteration 2.
    folder = StoreLayout.of(store).tune(config.name())
    last = {}
    for trial in Path(folder.path).glob("_trial_*/result.json"):
        rows = [json.loads(line) for line in trial.read_text().splitlines()]
        last[rows[-1]["config"]["lr_dynamic"]] = rows[-1]["iteration"]
    assert last == {10.0: 6, 1e7: 2}
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("raydd-tune").experiment_id], "tags.`raydd.trial_id` != ''"
    )
    steps = {float(run.data.params["lr_dynamic"]): client.get_metric_history(run.info.run_id, "loss") for run in runs}
    assert {lr: [m.step for m in history] for lr, history in steps.items()} == {10.0: list(range(6)), 1e7: [0, 1]}
    at_rung = {lr: history[1].value for lr, history in steps.items()}  # the loss ASHA compared at iteration 2
    assert at_rung[1e7] > 2 * at_rung[10.0], at_rung


def test_a_starting_point_outside_the_ranges_is_refused_in_one_line(tmp_path: Path) -> None:
    config = TuneConfig(store=str(tmp_path), lr_dynamic_min=1.0, lr_dynamic_max=100.0, **SMALL)
    with pytest.raises(RayddError, match="starting point .* inside the ranges"):
        tune(config, sweep_presets(config), starts=[{"lr_dynamic": 1e3, "lr_hal": 1e-4}])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_mtt_sweep_matches_expert_trajectories(tiny_datasets: Path, tmp_path: Path) -> None:
    store = store_holding(tiny_datasets, tmp_path)
    layout = StoreLayout.of(store)
    for model in ("convnet", "minic3d"):  # seeded trajectories of real initialisations: no training
        write_experts(layout.experts("builtin", model).uri, model=model, epochs=10)
    argv = ["--store", store, "--method", "mtt", "--num-samples", "1", "--max-concurrent", "1"]
    argv += ["--iterations", "2", "--eval-epochs", "2", "--network-width", "8", "--batch-real", "4"]
    assert main(argv) == 0
    config = TuneConfig(
        store=store,
        method="mtt",
        num_samples=1,
        max_concurrent=1,
        iterations=2,
        eval_epochs=2,
        network_width=8,
        batch_real=4,
    )
    best = json.loads(Path(layout.tune(config.name()).child("best_preset.json").path).read_text())
    assert best["sweep"]["method"] == "mtt" and best["sweep"]["trials"] == 1
    assert best["preset"]["syn_steps"] >= 1 and best["preset"]["iterations"] == 2


def _entries(text: str) -> list[tuple[str, str, str]]:
    """``(method, path, user agent)`` of every recorded request that decodes: moto appends entries from
    concurrent requests to one file, so a few may be interleaved; those are left out."""
    found, decoder = [], json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r'\{"headers": ', text)):
        try:
            entry, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        found.append((entry["method"], unquote(urlparse(entry["url"]).path), headers.get("user-agent", "")))
    return found


def test_raydd_hands_tune_its_own_s3_filesystem() -> None:
    location = resolve("s3://bucket/store/tune")
    path, filesystem = arrow_filesystem(location)
    assert path == "bucket/store/tune" and filesystem.handler.fs is location.fs  # s3fs, with raydd's settings


@pytest.mark.slow
def test_a_sweep_on_s3_keeps_tunes_state_in_the_bucket_and_resumes(
    tiny_datasets: Path,
    s3_bucket: str,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    store = f"{s3_bucket}/store"
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    for path in sorted((tiny_datasets / "builtin").iterdir(), key=lambda p: p.name == "manifest.json"):
        fs.put_file(str(path), f"{store}/datasets/builtin/{path.name}")
    argv = ["--store", store, "--iterations", "3", "--grace-period", "3"]
    argv += ["--num-samples", "2", "--max-concurrent", "1", "--eval-epochs", "2", "--network-width", "8"]
    monkeypatch.setenv("RAYDD_FAULTS", "interrupt_after_trials=1")
    with Recording(s3_endpoint) as recording:
        assert main(argv) == 1  # interrupted after one trial
        monkeypatch.delenv("RAYDD_FAULTS")
        capsys.readouterr()
        assert main(argv) == 0
    assert "resuming the sweep" in capsys.readouterr().out
    name = TuneConfig(
        store=store, iterations=3, grace_period=3, num_samples=2, max_concurrent=1, eval_epochs=2, network_width=8
    ).name()
    sweep = f"{store.removeprefix('s3://')}/tune/{name}"
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(sweep)}
    assert {"best_preset.json", "static", "tuner.pkl"} <= names
    assert any(n.startswith("experiment_state") for n in names)
    trials = [n for n in names if n.startswith("_trial_")]
    assert len(trials) == 2 and all(fs.exists(f"{sweep}/{t}/result.json") for t in trials)
    recorded = recording.text()
    tune_requests = [(method, agent) for method, path, agent in _entries(recorded) if f"/tune/{name}/" in path]
    assert any(method == "PUT" for method, _ in tune_requests)
    # The sweep's folder was written by s3fs (aiobotocore); pyarrow's own S3 client (the AWS C++ SDK) sent nothing.
    assert all(agent.startswith("aiobotocore/") for _, agent in tune_requests), {a for _, a in tune_requests}
    assert "lang/c++" not in recorded  # in the user agent of the AWS C++ SDK, which pyarrow's S3 client is
