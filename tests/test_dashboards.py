"""dashboards/: the Grafana panels query metrics that exist (Ray's node panels: names a real Ray head exports),
Prometheus finds Ray's nodes, and a running prepare and a running distill publish raydd's metrics, while they run,
where that config makes Prometheus scrape. One Ray head of the module's own serves the tests that need one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import yaml
from ray.dashboard.modules.reporter.reporter_agent import METRICS_GAUGES

from raydd import metrics
from raydd.faults import resume_pipe
from tests.ray_head import RayHead, ray_head, stop, wait_for

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"
RAY_DASHBOARDS = Path(ray.__file__).parent / "dashboard" / "modules" / "metrics" / "dashboards"
RAY_PANELS_USED = {"ray_node_gpus_utilization", "ray_node_cpu_utilization", "ray_object_store_memory"}
# The node panels beside raydd's: title -> the Ray metrics it must query.
NODE_PANELS = {
    "Node memory": {"ray_node_mem_used", "ray_node_mem_total"},
    "GPU memory": {"ray_node_gram_used", "ray_node_gram_available"},
    "GPU utilisation": {"ray_node_gpus_utilization"},
    "Object store memory": {"ray_object_store_memory", "ray_resources"},
    "Object store memory per node": {"ray_object_store_memory", "ray_resources"},
}
GPU_METRICS = {"ray_node_gram_used", "ray_node_gram_available", "ray_node_gpus_utilization"}
DISCOVERY_FILE = "prom_metrics_service_discovery.json"
DISTILL_METRICS = [
    metrics.DISTILL_LOSS,
    metrics.DISTILL_ITERATIONS_PER_SECOND,
    metrics.DISTILL_MATCHING_SAMPLES_PER_SECOND,
    metrics.DISTILL_CHECKPOINT_AGE_SECONDS,
]
START_TIMEOUT_S, PUBLISH_TIMEOUT_S = 60, 90

# PromQL words that are not metric names: aggregations, functions, modifiers, and label names in by (...).
_PROMQL_WORDS = {
    "sum",
    "avg",
    "max",
    "min",
    "count",
    "rate",
    "irate",
    "increase",
    "by",
    "without",
    "on",
    "ignoring",
    "and",
    "or",
    "unless",
    "vector",
}


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    return {word for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr) if word not in _PROMQL_WORDS}


def _ray_dashboard_metrics() -> set[str]:
    """Metric names in the queries of Ray's own Grafana dashboards, as installed."""
    return {
        name
        for path in RAY_DASHBOARDS.glob("*_panels.py")
        for name in re.findall(r"\bray_[a-z0-9_]+", path.read_text())
    }


def _ray_node_gauges() -> set[str]:
    """The node gauges Ray's reporter agent defines (every node's agent exports them, prefixed ``ray_``)."""
    return {f"ray_{name}" for name in METRICS_GAUGES}


def _targets() -> list[tuple[str, str]]:
    dashboard = json.loads((DASHBOARDS / "grafana_raydd.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_panel_queries_a_metric_raydd_exports_or_ray_publishes() -> None:
    raydd_names = {metrics.PROMETHEUS_PREFIX + name for name in metrics.EXPORTED}
    ray_names = _ray_dashboard_metrics() | _ray_node_gauges()
    assert RAY_PANELS_USED <= ray_names, f"not in Ray's dashboards at {RAY_DASHBOARDS}: {RAY_PANELS_USED - ray_names}"
    queried = set()
    for title, expr in _targets():
        names = _metric_names(expr)
        assert names, f"panel {title!r} queries no metric: {expr}"
        assert names <= raydd_names | ray_names, (
            f"panel {title!r} queries unknown metrics {names - raydd_names - ray_names}"
        )
        queried |= names
    assert raydd_names <= queried, f"exported but on no panel: {raydd_names - queried}"
    assert RAY_PANELS_USED <= queried


def test_node_memory_gpu_and_object_store_panels_sit_beside_raydds() -> None:
    dashboard = json.loads((DASHBOARDS / "grafana_raydd.json").read_text())
    queried = {
        panel["title"]: set().union(*(_metric_names(t["expr"]) for t in panel.get("targets", [])))
        for panel in dashboard["panels"]
    }
    for title, names in NODE_PANELS.items():
        assert names <= queried.get(title, set()), f"panel {title!r} queries {queried.get(title)}, not {names}"
    # Memory panels are in bytes (Ray reports GPU memory in MiB: the query scales it), utilisation in fractions.
    units = {
        panel["title"]: panel["fieldConfig"]["defaults"]["unit"]
        for panel in dashboard["panels"]
        if "fieldConfig" in panel
    }
    assert units["Node memory"] == units["GPU memory"] == "bytes"
    gram = [t["expr"] for p in dashboard["panels"] if p["title"] == "GPU memory" for t in p["targets"]]
    assert all(expr.endswith("* 1024 * 1024") for expr in gram)
    # The GPU metrics are the ones Ray's reporter agent defines (a GPU-less node exports none of them).
    assert _ray_node_gauges() >= GPU_METRICS | {"ray_node_mem_used", "ray_node_mem_total"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_datasource_is_a_template_variable() -> None:
    dashboard = json.loads((DASHBOARDS / "grafana_raydd.json").read_text())
    assert {"name": "datasource", "type": "datasource", "query": "prometheus"}.items() <= dashboard["templating"][
        "list"
    ][0].items()
    for panel in dashboard["panels"]:
        for holder in [panel, *panel.get("targets", [])]:
            assert holder.get("datasource", {"uid": "${datasource}"})["uid"] == "${datasource}", panel["title"]


def test_prometheus_reads_rays_service_discovery_file() -> None:
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    files = [f for sd in job["file_sd_configs"] for f in sd["files"]]
    assert files == [f"/tmp/ray/{DISCOVERY_FILE}"]
    # Ray's own config for `ray metrics launch-prometheus` reads the same file.
    rays = yaml.safe_load((RAY_DASHBOARDS.parent / "export" / "prometheus" / "prometheus.yml").read_text())
    assert files == [f for sd in rays["scrape_configs"][0]["file_sd_configs"] for f in sd["files"]]


def _scrape(target: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


def _discovered_targets(temp: Path) -> list[str]:
    try:
        return [target for group in json.loads((temp / DISCOVERY_FILE).read_text()) for target in group["targets"]]
    except (OSError, ValueError):
        return []


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """A Ray head with its dashboard (which writes Prometheus's discovery file); workers report their metrics to
    the node's agent every second instead of every 10 s."""
    with ray_head(tmp_path_factory.mktemp("head"), RAY_metrics_report_interval_ms="1000") as started:
        targets = wait_for(
            lambda: _discovered_targets(started.temp),
            within_s=START_TIMEOUT_S,
            watching=started.process,
            what=f"the Ray head's {DISCOVERY_FILE}",
            log=started.log,
        )
        assert targets
        yield started


def _published(head: RayHead) -> str:
    return "\n".join(_scrape(target) for target in _discovered_targets(head.temp))


def _exported_names(text: str) -> set[str]:
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


@pytest.mark.ray
@pytest.mark.slow
def test_a_ray_head_exports_the_node_metrics_the_panels_query(head: RayHead) -> None:
    dashboard = json.loads((DASHBOARDS / "grafana_raydd.json").read_text())
    queried = {name for _, expr in _targets() for name in _metric_names(expr) if not name.startswith("ray_raydd_")}
    assert {"ray_node_mem_used", "ray_node_mem_total", "ray_object_store_memory"} <= queried

    def expected(text: str) -> set[str]:  # a GPU-less node exports no GPU metric; a GPU node all of them
        return queried if 'ray_resources{Name="GPU"' in text else queried - GPU_METRICS

    def all_exported() -> tuple[set[str], set[str]] | None:
        text = _published(head)
        names = _exported_names(text)
        return (names, expected(text)) if expected(text) <= names else None

    exported, wanted = wait_for(
        all_exported,
        within_s=PUBLISH_TIMEOUT_S,
        watching=head.process,
        what=f"all of {sorted(queried)} (GPU ones only on a GPU node) on the head's metrics endpoint",
        log=head.log,
    )
    assert wanted <= exported and len(dashboard["panels"]) > len(NODE_PANELS)


@pytest.mark.ray
@pytest.mark.slow
def test_a_running_prepare_publishes_its_throughput_before_it_ends(head: RayHead, tmp_path: Path) -> None:
    store = tmp_path / "store"
    log = tmp_path / "prepare.log"
    # The driver pauses, its gauge set, once the first clip is done; it goes on when the test opens the pipe.
    prepare = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raydd.prepare",
            "--store",
            str(store),
            "--frames",
            "4",
            "--height",
            "16",
            "--width",
            "16",
            "--ray-address",
            head.address,
        ],
        env={**head.env, "RAYDD_FAULTS": "pause_prepare_after_clips=1"},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    prefix = metrics.PROMETHEUS_PREFIX + metrics.PREPARE_CLIPS_PER_SECOND + "{"
    try:
        line = wait_for(
            lambda: next((x for x in _published(head).splitlines() if x.startswith(prefix)), None),
            within_s=PUBLISH_TIMEOUT_S,
            watching=prepare,
            what=f"{prefix}...}} on the metrics endpoints while prepare runs",
            log=log,
        )
        assert prepare.poll() is None  # scraped while the prepare was still running
        assert 'dataset="builtin"' in line and float(line.rsplit(" ", 1)[1]) > 0, line
        assert not (store / "datasets" / "builtin" / "manifest.json").exists()
        with open(resume_pipe(str(store)), "wb"):  # the go-ahead: the driver's open of the pipe returns
            pass
        assert prepare.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        stop(prepare)
    assert (store / "datasets" / "builtin" / "manifest.json").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_a_running_distill_publishes_its_metrics_where_prometheus_scrapes(head: RayHead, tmp_path: Path) -> None:
    store = tmp_path / "store"
    small = ["--frames", "4", "--height", "16", "--width", "16"]
    prepared = subprocess.run(
        [sys.executable, "-m", "raydd.prepare", "--store", str(store), *small, "--ray-address", head.address],
        env=head.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    distill_log = tmp_path / "distill.log"
    # Far more iterations than the test waits for: the gauges live while the stage runs.
    distill = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raydd.distill",
            "--dataset",
            "builtin",
            "--paradigm",
            "naive",
            "--iterations",
            "100000",
            "--checkpoint-every",
            "10",
            "--network-width",
            "8",
            "--batch-real",
            "4",
            "--eval-runs",
            "0",
            "--store",
            str(store),
            "--ray-address",
            head.address,
        ],
        env=head.env,
        stdout=distill_log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def all_published() -> dict[str, str]:
        text = "\n".join(_scrape(target) for target in _discovered_targets(head.temp))
        found = {
            name: line
            for name in DISTILL_METRICS
            for line in text.splitlines()
            if line.startswith(metrics.PROMETHEUS_PREFIX + name + "{")
        }
        return found if len(found) == len(DISTILL_METRICS) else {}

    try:
        published = wait_for(
            all_published,
            within_s=PUBLISH_TIMEOUT_S,
            watching=distill,
            what=f"all of {DISTILL_METRICS} on the metrics endpoints",
            log=distill_log,
        )
    finally:
        stop(distill)
    assert len(published) == len(DISTILL_METRICS), (
        f"published only {sorted(published)}; distill log: {distill_log.read_text()[-3000:]}"
    )
    loss = published[metrics.DISTILL_LOSS]
    assert 'stage="naive"' in loss and 'method="dm"' in loss and 'dataset="builtin"' in loss, loss
    for line in published.values():
        assert float(line.rsplit(" ", 1)[1]) >= 0, line
