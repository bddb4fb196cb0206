"""``--plan`` of distill, experts and tune: it prints what a run needs and starts nothing, works before the
dataset is prepared (published sizes), and refuses in one line what a real Ray cluster cannot place."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raydd.config import parse_config
from raydd.distill.__main__ import main as distill_main
from raydd.experts.__main__ import main as experts_main
from raydd.pipeline.comparison import PipelineConfig, row_settings
from raydd.resources import (
    Capacity,
    Demand,
    NodeShape,
    auto_cpus_per_worker,
    auto_use_gpu,
    capacity_from_autoscaler,
    evaluation_devices,
    place,
    tasks_at_once,
)
from raydd.tune import main as tune_main
from tests.conftest import store_holding

ROOT = Path(__file__).resolve().parents[2]
NO_RAY = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAYDD_AUTOSCALER_CONFIG")}
PROBE = (
    "import sys, ray, importlib; code = importlib.import_module(sys.argv[1]).main(sys.argv[2:]); "
    "print(json.dumps(ray.is_initialized())); sys.exit(code)"
)


def plan_in_a_fresh_process(module: str, *argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGV`` in a process of its own; its last stdout line says whether Ray was initialised."""
    return subprocess.run(
        [sys.executable, "-c", "import json; " + PROBE, module, *argv],
        cwd=cwd,
        env={**NO_RAY, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_distill_plan_for_k400_before_prepare_uses_published_sizes_and_starts_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    done = plan_in_a_fresh_process(
        "raydd.distill.__main__",
        "--dataset",
        "k400",
        "--workers",
        "4",
        "--use-gpu",
        "--store",
        str(store),
        "--plan",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    *printed, initialised = done.stdout.strip().splitlines()
    text = "\n".join(printed)
    assert json.loads(initialised) is False  # no ray.init, so no task either
    assert not any(tmp_path.iterdir())  # no store, no ./raydd-store, no mlflow.db
    assert (
        "400 classes, 240,000 train / 20,000 test clips of 8x64x64x3" in text
        and "nominal" in text
        and "Kay et al. 2017" in text
    )
    assert "lr_dynamic=1.0, lr_hal=1e-05" in text and "batch_real=64" in text  # the K400 IPC 1 row of Suppl. Table 11
    assert (
        "4 x {CPU: 1, GPU: 1} Ray Train workers (all at once)" in text
        and "5 x {CPU: 1, GPU: 1} evaluation runs" in text
    )
    assert "own classes resident on the GPU as uint8" in text and "100 classes a worker" in text
    assert "25.58 GB per node" in text  # 240k + 20k clips of 98,304 bytes (+ Arrow framing)
    assert "not checked" in text


def test_plan_for_cluster_yaml_before_ray_up_refuses_eight_gpu_workers(tmp_path: Path) -> None:
    """RAYDD_AUTOSCALER_CONFIG names a cluster that does not exist yet: its node types are the capacity."""
    argv = ["--dataset", "k400", "--workers", "8", "--use-gpu", "--store", str(tmp_path / "store"), "--plan"]
    done = plan_in_a_fresh_process(
        "raydd.distill.__main__", *argv, cwd=tmp_path, RAYDD_AUTOSCALER_CONFIG=str(ROOT / "cluster.yaml")
    )
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "8 x {CPU: 8, GPU: 1} Ray Train workers (all at once) cannot be placed: only 4 fit on" in done.stderr
    assert "up to 4 more gpu_worker {CPU: 8, GPU: 1}" in done.stderr and "lower --workers" in done.stderr
    assert json.loads(done.stdout.strip()) is False and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_experts_and_tune_plans_start_nothing(tmp_path: Path) -> None:
    for module, argv in (("raydd.experts.__main__", ["--dataset", "ssv2"]), ("raydd.tune", ["--dataset", "hmdb51"])):
        done = plan_in_a_fresh_process(module, *argv, "--store", str(tmp_path / "store"), "--plan", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        *printed, initialised = done.stdout.strip().splitlines()
        assert json.loads(initialised) is False and not any(tmp_path.iterdir())
        text = "\n".join(printed)
        if module == "raydd.tune":
            assert (
                "51 classes, 3,570 train" in text
                and "Kuehne et al. 2011" in text
                and "sweeping lr_dynamic and lr_hal" in text
            )
            assert "lr_hal=" not in text  # swept, not the preset's
        else:
            assert "174 classes, 168,913 train / 24,777 test" in text and "20 minic3d expert(s)" in text


def test_plan_reads_a_prepared_datasets_manifest(
    tiny_datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = store_holding(tiny_datasets, tmp_path)
    assert distill_main(["--store", store, "--plan", "--workers", "2", "--cpus-per-worker", "1"]) == 0
    text = capsys.readouterr().out
    manifest = json.loads((tmp_path / "datasets" / "builtin" / "manifest.json").read_text())
    train = sum(manifest["metadata"]["class_counts"]["train"].values())
    assert f"10 classes, {train:,} train" in text and "4x16x16x3" in text and "manifest.json" in text
    assert "5 classes a worker" in text and "fits the connected Ray cluster" in text


@pytest.mark.parametrize(
    ("main", "argv", "refusal"),
    [
        pytest.param(
            distill_main,
            ["--workers", "4", "--cpus-per-worker", "1"],
            "4 x {CPU: 1} Ray Train workers (all at once) cannot be placed: only 2 fit",
            id="distill-4-cpu-workers",
        ),
        pytest.param(
            distill_main,
            ["--use-gpu"],
            "1 x {CPU: 1, GPU: 1} Ray Train workers (all at once) cannot be placed: only 0 fit",
            id="distill-gpu",
        ),
        pytest.param(
            experts_main,
            ["--gpus-per-expert", "0.5"],
            "expert tasks (queued beyond what fits) fits on no node",
            id="experts-gpu",
        ),
        pytest.param(
            tune_main,
            ["--cpus-per-trial", "3"],
            "stage-1 task (queued beyond what fits) fits on no node",
            id="tune-3-cpus",
        ),
    ],
)
def test_plan_refuses_what_the_local_cluster_cannot_place(
    ray_cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], main, argv: list[str], refusal: str
) -> None:
    assert main(["--dataset", "k400", "--store", str(tmp_path), "--plan", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    assert refusal in captured.err and "the connected Ray cluster: nodes" in captured.err


def test_automatic_defaults_on_the_local_cluster(
    ray_cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No GPU on the session's cluster: a CPU run, one worker on both CPUs; two workers one each."""
    assert distill_main(["--dataset", "k400", "--store", str(tmp_path), "--plan"]) == 0
    assert "1 Ray Train worker(s) on CPU, 2 CPU(s) each" in capsys.readouterr().out
    assert distill_main(["--dataset", "k400", "--store", str(tmp_path), "--plan", "--workers", "2"]) == 0
    assert "2 Ray Train worker(s) on CPU, 1 CPU(s) each" in capsys.readouterr().out


def cluster_yaml_capacity() -> Capacity:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    return capacity_from_autoscaler(
        config, (NodeShape(head.get("CPU", 0), head.get("GPU", 0), "head"),), "cluster.yaml", {"g5": 23028 << 20}
    )


def test_cluster_yaml_places_four_gpu_workers_not_eight() -> None:
    capacity = cluster_yaml_capacity()
    four, eight = (Demand("Ray Train workers", n, 8, 1, gang=True) for n in (4, 8))
    assert place([four], capacity).fits and place([four], capacity).nodes_used == 4
    refusal = place([eight], capacity)
    assert (
        not refusal.fits
        and "only 4 fit" in refusal.reason
        and "up to 4 more gpu_worker {CPU: 8, GPU: 1}" in refusal.reason
    )
    assert auto_use_gpu(None, capacity) and auto_cpus_per_worker(None, 4, True, capacity) == 8
    assert tasks_at_once(2, 0.25, capacity) == 4 * 4  # quarter-GPU tasks: four on each GPU worker, none on CPU workers
    assert tasks_at_once(2, 0, capacity) == 8 * 8 + 4 * 4  # CPU tasks: 16/2 on each CPU worker, 8/2 on each GPU worker


def test_evaluations_reserve_a_gpu_where_the_cluster_has_one(tmp_path: Path) -> None:
    """raydd.pipeline's evaluation runs take one GPU and its node's CPUs per GPU on a GPU cluster (cluster.yaml:
    8 CPUs a GPU worker), and reserve nothing more than the default CPU on a CPU-only one or with no cluster."""
    gpu_devices = evaluation_devices(cluster_yaml_capacity())
    assert gpu_devices == {"gpus_per_run": 1.0, "cpus_per_run": 8.0}
    assert evaluation_devices(Capacity(nodes=(NodeShape(16, 0, "cpu"),), source="cpu only")) == {}
    assert evaluation_devices(None) == {}
    outputs = {"static-dynamic": str(tmp_path / "sd"), "naive": str(tmp_path / "naive")}
    config = parse_config(PipelineConfig, ["--store", str(tmp_path)], "raydd.pipeline")[0]
    rows = row_settings(config, outputs, gpu_devices).values()
    assert len(rows) == 4 and {(s.gpus_per_run, s.cpus_per_run) for s in rows} == {(1.0, 8.0)}
    assert {(s.gpus_per_run, s.cpus_per_run) for s in row_settings(config, outputs).values()} == {(0.0, 1.0)}


def test_packing_spreads_a_gang_over_nodes_and_counts_them() -> None:
    capacity = Capacity(nodes=(NodeShape(4, 0, "a"), NodeShape(6, 0, "b")), source="two nodes")
    assert place([Demand("w", 3, 3, 0, gang=True)], capacity).nodes_used == 2  # 1 on a, 2 on b
    assert not place([Demand("w", 4, 3, 0, gang=True)], capacity).fits  # 4 x 3 CPUs: 10 CPUs in all, but 3 slots
    assert (
        auto_cpus_per_worker(None, 3, False, capacity) == 3.0 and auto_cpus_per_worker(None, 1, False, capacity) == 6.0
    )
    assert (
        auto_cpus_per_worker(2.5, 3, False, capacity) == 2.5
        and not auto_use_gpu(None, capacity)
        and auto_use_gpu(True, capacity)
    )


@pytest.mark.ray
@pytest.mark.slow
def test_plan_reads_a_cluster_by_its_address_and_the_autoscaler_config_it_is_given(tmp_path: Path) -> None:
    """A head of its own (2 CPUs): --plan joins nothing, reads it through Ray's state API at the dashboard's
    http address or the GCS address in RAY_ADDRESS, and adds the node types of RAYDD_AUTOSCALER_CONFIG."""
    from tests.ray_head import ray_head, wait_for

    with ray_head(tmp_path) as head:
        wait_for(
            lambda: _alive_nodes(head.dashboard),
            within_s=120,
            watching=head.process,
            what="the head's node in the state API",
            log=head.log,
        )
        env = {**{k: v for k, v in head.env.items() if k != "RAYDD_AUTOSCALER_CONFIG"}, "PYTHONPATH": str(ROOT)}
        plan = [
            sys.executable,
            "-m",
            "raydd.distill",
            "--dataset",
            "k400",
            "--store",
            str(tmp_path / "store"),
            "--plan",
        ]
        refused = subprocess.run(
            [*plan, "--workers", "4", "--cpus-per-worker", "1", "--ray-address", head.dashboard],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode == 1 and refused.stdout == "" and len(refused.stderr.strip().splitlines()) == 1, (
            refused.stderr
        )
        assert re.search(
            rf"only 2 fit on the Ray cluster at {re.escape(head.dashboard)}: "
            r"nodes \S+ {CPU: 2} \(2 CPUs, 0 GPUs in all\)",
            refused.stderr,
        ), refused.stderr
        autoscaling = {**env, "RAY_ADDRESS": head.address, "RAYDD_AUTOSCALER_CONFIG": str(ROOT / "cluster.yaml")}
        fits = subprocess.run([*plan, "--workers", "4"], env=autoscaling, capture_output=True, text=True, timeout=300)
        assert fits.returncode == 0, fits.stderr
        assert (
            "4 x {CPU: 8, GPU: 1} Ray Train workers" in fits.stdout
            and "up to 4 more gpu_worker {CPU: 8, GPU: 1}" in fits.stdout
        )
        assert "24.1 GB a GPU" in fits.stdout and "4 node(s): 102.34 GB from the store in all" in fits.stdout
        eight = subprocess.run(
            [*plan, "--workers", "8", "--use-gpu"], env=autoscaling, capture_output=True, text=True, timeout=300
        )
        assert (
            eight.returncode == 1
            and "8 x {CPU: 8, GPU: 1} Ray Train workers (all at once) cannot be placed: only 4 fit" in eight.stderr
        )
    assert not (tmp_path / "store").exists()


def _alive_nodes(dashboard: str) -> list:
    """The state API's alive nodes; none while the dashboard is still starting."""
    from ray.util.state import list_nodes
    from ray.util.state.exception import RayStateApiException

    try:
        return list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")], timeout=5)
    except RayStateApiException:
        return []
