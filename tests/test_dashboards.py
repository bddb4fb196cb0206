"""dashboards/: the Grafana panels query metrics that exist, Prometheus finds Ray's nodes, and a running
distill publishes raydd's metrics where that config makes Prometheus scrape."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import ray
import yaml

from raydd import metrics
from tests.ray_head import ray_head, stop, wait_for

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"
RAY_DASHBOARDS = Path(ray.__file__).parent / "dashboard" / "modules" / "metrics" / "dashboards"
RAY_PANELS_USED = {"ray_node_gpus_utilization", "ray_node_cpu_utilization", "ray_object_store_memory"}
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


def _targets() -> list[tuple[str, str]]:
    dashboard = json.loads((DASHBOARDS / "grafana_raydd.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_panel_queries_a_metric_raydd_exports_or_ray_publishes() -> None:
    raydd_names = {metrics.PROMETHEUS_PREFIX + name for name in metrics.EXPORTED}
    ray_names = _ray_dashboard_metrics()
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


def test_a_running_distill_publishes_its_metrics_where_prometheus_scrapes(tmp_path: Path) -> None:
    # Workers report their metrics to the node's agent every second instead of every 10 s.
    with ray_head(tmp_path, RAY_metrics_report_interval_ms="1000") as head:
        targets = wait_for(
            lambda: _discovered_targets(head.temp),
            within_s=START_TIMEOUT_S,
            watching=head.process,
            what=f"the Ray head's {DISCOVERY_FILE}",
            log=head.log,
        )
        assert targets
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
