"""A real multi-node Ray cluster on one machine, for the multi-node tests and ``benchmarks/cluster.py``.

Every node is its own ``ray start --block`` process (a raylet with its agents and workers): a head that offers no
CPUs to tasks, as in ``cluster.yaml``, and worker nodes added and removed one at a time. Each node gets its own
environment, which its raylet and every worker it starts inherit:

* ``RAYDD_CACHE``, ``HOME`` and ``TMPDIR`` in a folder of its own, and Ray's temp dir (its session: logs, sockets,
  spilled objects) of its own, so nodes share nothing but the store and Ray;
* ``AWS_ENDPOINT_URL_S3`` pointing at a request-counting TCP proxy of its own in front of the S3 server, so every
  S3 request is attributed to the node that made it;
* ``RAYDD_CHAOS=<cluster id>:<node name>``, the marker :mod:`benchmarks.chaos_tools` finds its processes by.

Removing a node SIGKILLs its whole process group (the raylet, its agents and every worker on it) at once, as when
a machine is lost; nothing is found by name, so other Ray clusters on the machine are never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.chaos_tools import MARK_VARIABLE, Lineage, Proc, ours
from benchmarks.scale import ByteCountingProxy
from raydd.ports import free_port

T = TypeVar("T")
NODE_START_TIMEOUT_S = 300
CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
FAKE_HEAD_TYPE = "ray.head.default"  # the head's type name in Ray's fake provider (it tags its head so)
FAKE_GPU = "fake_gpu"  # stands in for GPU on fake nodes: a raylet told GPU: 1 would hand out a CUDA device
LOCAL_CPUS_PER_NODE = 1  # this machine has 2 cores: each fake node offers at most 1 CPU
NODE_RESOURCE = "raydd_node_"  # a custom resource naming each worker node: node_resource(name)
CHECK_EVERY_S = 0.5
# A node's own agents, and the cluster-wide coordinator Ray Train starts once and keeps on the head: not left-overs.
NODE_DAEMONS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::_AutoscalingCoordinatorActor")
LAUNCH_LINE = re.compile(r"Launching (\d+) nodes, type (\S+)\.")  # Ray's autoscaler's NodeLauncher, in monitor.log
REPO = Path(__file__).resolve().parents[1]


def node_resource(name: str) -> str:
    """The custom resource (1 unit) a worker node ``name`` offers: tells the nodes apart, all being 127.0.0.1."""
    return f"{NODE_RESOURCE}{name}"


@dataclasses.dataclass
class Node:
    name: str
    cpus: int
    root: Path  # its cache, home and temp folders
    env: dict[str, str]
    process: subprocess.Popen
    log: Path
    proxy: ByteCountingProxy | None

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def shard_gets(self, needle: str = "/datasets/") -> dict[str, int]:
        """GET requests this node sent for each ``.arrow`` object whose path holds ``needle``, by object path."""
        counts: dict[str, int] = {}
        for line in self.proxy.requests if self.proxy else ():
            method, path = line.split(" ", 1)
            path = path.split("?")[0]
            if method == "GET" and needle in path and path.endswith(".arrow"):
                counts[path] = counts.get(path, 0) + 1
        return counts


def completed_writes(requests: list[str], prefix: str) -> dict[str, int]:
    """Objects under ``prefix`` (``/bucket/key...``) written whole, by path, counted from S3 request lines: a
    single PUT, or the POST that completes a multipart upload (its parts' PUTs and the POST that starts it are
    not writes of the object)."""
    counts: dict[str, int] = {}
    for line in requests:
        method, target = line.split(" ", 1)
        path, _, query = target.partition("?")
        whole = (method == "PUT" and "partNumber=" not in query) or (method == "POST" and "uploadId=" in query)
        if whole and path.startswith(prefix):
            counts[path] = counts.get(path, 0) + 1
    return counts


def wait_for(
    check: Callable[[], T],
    *,
    within_s: float,
    watching: subprocess.Popen,
    what: str,
    log: Path,
    detail: Callable[[], str] = str,
) -> T:
    """``check()``'s first truthy value within ``within_s`` seconds. Between checks it waits on the ``watching``
    process, so a crash of that process ends the wait at once with its log instead of running out the deadline.
    For state that gives no notification (nodes Ray registers, files Ray rewrites, HTTP endpoints, job status),
    this is the condition wait. ``detail()`` adds to a failure's message (the last error of the check, say)."""
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{what} not within {within_s} s; {detail()}\nlog of the watched process:\n" + _tail(log)
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            watching.wait(timeout=min(CHECK_EVERY_S, max(0.0, deadline - time.monotonic())))
        if watching.poll() is not None:
            raise AssertionError(f"{what}: the process stopped (exit {watching.returncode}); its log:\n" + _tail(log))


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


class Background:
    """A command running as a driver on a cluster's head, its output in a file (read while it runs)."""

    def __init__(self, cluster: LocalCluster, arguments: list[str], log: Path, **extra: str) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", *arguments],
            env=cluster.command_env(**extra),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=cluster.root,
            start_new_session=True,
        )

    def wait_for(self, check: Callable[[], T], what: str, within_s: float = 600) -> T:
        """``check()``'s first truthy value while the command runs (stored state Ray gives no notice of)."""
        return wait_for(check, within_s=within_s, watching=self.process, what=what, log=self.log)

    def finish(self, timeout: float = 600) -> str:
        """The command's output once it has ended; fails unless it succeeded."""
        self.process.wait(timeout=timeout)
        assert self.process.returncode == 0, self.output()[-5000:]
        return self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def stored_objects(fs: Any, pattern: str) -> dict[str, str]:  # noqa: ANN401 - an s3fs.S3FileSystem
    """Objects matching a glob, by path, with their ETag (fresh from the server, not s3fs's listing cache)."""
    fs.invalidate_cache()
    return {path: fs.info(path)["ETag"] for path in fs.glob(pattern)}


def registered_checkpoint(fs: Any, store: str) -> dict[str, str]:  # noqa: ANN401 - an s3fs.S3FileSystem
    """The distill runs of ``s3://`` store ``store`` that have a checkpoint Ray Train has registered (its checkpoint
    manager's snapshot in the run's folder): from then on a restarted worker group resumes from a checkpoint. A
    checkpoint's files in the bucket are not enough: a kill between their upload and the controller's registration
    restarts the group from the first iteration."""
    return stored_objects(fs, f"{store.removeprefix('s3://')}/distill/runs/*/checkpoint_manager_snapshot.json")


def copy_datasets(fs: Any, source: str, target: str) -> str:  # noqa: ANN401 - an s3fs.S3FileSystem
    """Copy ``source``'s prepared datasets into a fresh ``s3://`` store ``target``; returns ``target``."""
    fs.copy(f"{source.removeprefix('s3://')}/datasets", f"{target.removeprefix('s3://')}/datasets", recursive=True)
    return target


class LocalCluster:
    """A head and worker nodes on 127.0.0.1; ``s3_port`` is the S3 server each node's counting proxy fronts."""

    def __init__(self, root: Path, *, s3_port: int | None = None, base_env: dict[str, str] | None = None) -> None:
        self.id = f"mn{uuid.uuid4().hex[:8]}"
        self.root = root
        self.s3_port = s3_port
        self.nodes: dict[str, Node] = {}
        self.removed: list[Node] = []
        self.temp = Path(tempfile.mkdtemp(prefix="rmn", dir="/tmp"))  # short: Ray's socket paths fit 107 bytes
        self.port = free_port()
        self.dashboard_port = free_port()
        env = dict(base_env if base_env is not None else os.environ)
        for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAYDD_CACHE", "RAYDD_FAULTS", "RAYDD_LOCAL_RAY"):
            env.pop(key, None)
        env.update(
            RAY_AUTH_MODE="disabled",
            RAY_USAGE_STATS_ENABLED="0",
            RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",
            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
            # Ray Train's placement-group cleaner asks the State API; point it at this cluster's own dashboard.
            RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{self.dashboard_port}",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        )
        self.base_env = env
        self.lineage = Lineage()
        self.lineage.__enter__()
        self._counter = 0
        self.last_error = ""  # the State API's last failure, for a timeout's message

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def head(self) -> Node:
        return self.nodes["head"]

    def node_env(self, name: str) -> tuple[dict[str, str], Path, ByteCountingProxy | None]:
        root = self.root / name
        for folder in ("cache", "home", "tmp"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        env = dict(self.base_env)
        env.update(
            RAYDD_CACHE=str(root / "cache"),
            HOME=str(root / "home"),
            TMPDIR=str(root / "tmp"),
            **{MARK_VARIABLE: f"{self.id}:{name}"},
        )
        proxy = None
        if self.s3_port is not None:
            proxy = ByteCountingProxy(self.s3_port)
            env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{proxy.port}"
        return env, root, proxy

    def _start(self, name: str, arguments: list[str], cpus: int) -> Node:
        env, root, proxy = self.node_env(name)
        log = root / "ray-start.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--node-ip-address=127.0.0.1"]
            + [f"--num-cpus={cpus}", "--num-gpus=0", "--disable-usage-stats"]
            + [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"]
            + [f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
            + [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]
            + arguments,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: removing the node kills exactly it
        )
        node = Node(name, cpus, root, env, process, log, proxy)
        self.nodes[name] = node
        self.lineage.add(process.pid, env[MARK_VARIABLE])
        return node

    def start_head(self, *, autoscaling_config: Path | None = None, env: dict[str, str] | None = None) -> Node:
        """The head: GCS, dashboard, 0 CPUs for tasks (drivers and Ray Train's controller run here)."""
        if env:
            self.base_env.update(env)
        arguments = [
            "--head",
            f"--port={self.port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            f"--temp-dir={self.temp}",
        ]
        if autoscaling_config is not None:
            arguments.append(f"--autoscaling-config={autoscaling_config}")
        node = self._start("head", arguments, 0)
        wait_for(
            lambda: "head" in self.alive_names(),
            within_s=NODE_START_TIMEOUT_S,
            watching=node.process,
            what="the head",
            log=node.log,
            detail=lambda: self.last_error,
        )
        return node

    def add_node(self, cpus: int = 1, *, name: str | None = None, resources: dict[str, float] | None = None) -> Node:
        """A worker node with ``cpus`` CPUs; returns once the cluster sees it alive."""
        self._counter += 1
        name = name or f"worker{self._counter}"
        arguments = [f"--address={self.address}", "--min-worker-port=0", "--max-worker-port=0"]
        # A temp dir of its own: its session logs are its own, so its log monitor forwards only its workers' lines
        # (with one shared dir every node's monitor forwarded every line, each printed once per node).
        arguments.append(f"--temp-dir={self.temp / name}")
        arguments.append(f"--resources={json.dumps({**(resources or {}), node_resource(name): 1})}")
        node = self._start(name, arguments, cpus)
        wait_for(
            lambda: name in self.alive_names(),
            within_s=NODE_START_TIMEOUT_S,
            watching=node.process,
            what=f"node {name}",
            log=node.log,
            detail=lambda: self.last_error,
        )
        return node

    def remove_node(self, name: str) -> float:
        """Lose node ``name`` at once: SIGKILL its raylet, agents and workers (its whole process group), and any
        process of it that left the group. Returns the time of the kill (``time.monotonic()``)."""
        node = self.nodes.pop(name)
        killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=30)
        for process in self.processes(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        self.removed.append(node)
        self.wait_on_head(lambda: not self.processes(name), within_s=30, what=f"every process of node {name} gone")
        return killed_at

    def replace_a_worker_node(self) -> float:
        """Lose a worker node whole (:meth:`remove_node`) and add a replacement with the same CPUs, as a cloud
        autoscaler would; returns the time of the kill (``time.monotonic()``)."""
        name, node = next((n, x) for n, x in self.nodes.items() if n != "head")
        killed_at = self.remove_node(name)
        self.add_node(node.cpus)
        return killed_at

    def left_behind(self) -> dict[str, list[str]]:
        """Per node, the Ray workers alive (every ``ray::`` process but the node's own daemons): after a command
        has ended, what it left behind."""
        found = {}
        for name in self.nodes:
            titles = [p.title for p in self.processes(name) if p.title.startswith("ray::")]
            found[name] = [title for title in titles if title not in NODE_DAEMONS]
        return found

    def left_after(self, within_s: float) -> dict[str, list[str]]:
        """:meth:`left_behind` once it is empty, or as it is after ``within_s`` seconds (Ray reaps a finished
        command's workers in its own time): per node, the workers a command left, for a benchmark to count."""
        deadline = time.monotonic() + within_s
        left = self.left_behind()
        while any(left.values()) and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.head.process.wait(timeout=CHECK_EVERY_S)  # a wait between looks that ends if the head dies
            left = self.left_behind()
        return {name: titles for name, titles in left.items() if titles}

    def wait_on_head(
        self, check: Callable[[], T], *, within_s: float, what: str, detail: Callable[[], str] | None = None
    ) -> T:
        """:func:`wait_for` watching the head: the cluster's end ends the wait."""
        return wait_for(
            check,
            within_s=within_s,
            watching=self.head.process,
            what=what,
            log=self.head.log,
            detail=detail or (lambda: self.last_error),
        )

    def alive_nodes(self) -> list[Any] | None:
        """The nodes the cluster holds alive, or None while its State API does not answer."""
        from ray.util.state import list_nodes

        try:
            return list_nodes(
                address=f"http://127.0.0.1:{self.dashboard_port}",
                filters=[("state", "=", "ALIVE")],
                detail=True,
                timeout=20,
                # With dead nodes in the cluster, the State API counts them and takes the ALIVE-filtered answer
                # for truncated ("Failed to retrieve all 5 nodes ... (> 3)"): the answer is whole, take it.
                raise_on_missing_output=False,
            )
        except Exception as error:  # the dashboard answers only once it is up, and slowly under load
            self.last_error = f"{type(error).__name__}: {error}"[:500]
            return None

    def alive_names(self) -> set[str]:
        """Names of the alive nodes this cluster added (by their :func:`node_resource`), ``head`` once it is up."""
        nodes = self.alive_nodes()
        if nodes is None:
            return set()
        names = {"head"} if nodes else set()
        for node in nodes:
            names |= {key[len(NODE_RESOURCE) :] for key in node.resources_total if key.startswith(NODE_RESOURCE)}
        return names

    def worker_nodes_alive(self) -> int | None:
        """How many nodes besides the head are alive (added or launched by the autoscaler); None while the
        State API does not answer."""
        nodes = self.alive_nodes()
        return None if nodes is None else sum(1 for node in nodes if not node.is_head_node)

    def launches(self) -> list[tuple[int, str]]:
        """The autoscaler's launches so far, in order, as (how many nodes, node type), from its own log (a node
        launched and gone again between two looks at the State API is counted too)."""
        found: list[tuple[int, str]] = []
        for log in sorted(self.temp.glob("session_2*/logs/monitor.log")):  # not the session_latest link too
            found += [(int(count), kind) for count, kind in LAUNCH_LINE.findall(log.read_text(errors="replace"))]
        return found

    def autoscaler_log(self) -> str:
        """The autoscaler's log (``monitor.log`` of the head's session): its status before every decision."""
        return "".join(log.read_text(errors="replace") for log in sorted(self.temp.glob("session_2*/logs/monitor.log")))

    def processes(self, name: str) -> list[Proc]:
        """Live processes of node ``name``: marked with its name, or seen descending from its ``ray start``."""
        self.lineage.note()
        return ours(f"{self.id}:{name}", self.lineage)

    def command_env(self, node: str = "head", **extra: str) -> dict[str, str]:
        """The environment of a command run on node ``node`` (a driver: on the head), joined to this cluster."""
        env = dict((self.nodes.get(node) or self.head).env)
        env.update(RAY_ADDRESS=self.address, PYTHONUNBUFFERED="1", **extra)
        return env

    def run(self, arguments: list[str], *, node: str = "head", timeout: float = 900, **extra: str) -> Any:
        """``python -m ARGUMENTS`` as a driver on ``node``; its CompletedProcess (text output)."""
        return subprocess.run(
            [sys.executable, "-m", *arguments],
            env=self.command_env(node, **extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )

    def shutdown(self) -> None:
        """SIGTERM every node (a raylet then stops what it started), SIGKILL what is left after a grace period."""
        for name in [n for n in self.nodes if n != "head"] + (["head"] if "head" in self.nodes else []):
            node = self.nodes.pop(name)
            if node.process.poll() is None:
                node.process.terminate()
                try:
                    node.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(node.process.pid, signal.SIGKILL)
                    node.process.wait(timeout=30)
            self.removed.append(node)
        for node in self.removed:
            for process in self.processes(node.name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
            if node.proxy is not None:
                node.proxy.close()
        self.lineage.__exit__(None, None, None)
        import shutil

        shutil.rmtree(self.temp, ignore_errors=True)


def dataset_shards(store: str, dataset: str = "builtin") -> dict[str, str]:
    """Object path (as the proxies log it, ``/bucket/key``) -> name, of every shard of a prepared dataset."""
    from raydd.storage import read_manifest, resolve

    location = resolve(f"{store}/datasets/{dataset}")
    return {f"/{location.path}/{record.name}": record.name for record in read_manifest(location).shards}


def gets_by_node(cluster: LocalCluster, store: str) -> dict[str, dict[str, int]]:
    """Per node: GET requests per dataset shard of ``store``."""
    prefix = "/" + store.removeprefix("s3://") + "/datasets/"
    return {name: node.shard_gets(prefix) for name, node in cluster.nodes.items()}


def launched_nodes(launches: list[tuple[int, str]]) -> dict[str, int]:
    """Nodes launched by node type, from :meth:`LocalCluster.launches` (or a slice of it)."""
    counts: dict[str, int] = {}
    for count, kind in launches:
        counts[kind] = counts.get(kind, 0) + count
    return counts


def peak_worker_nodes(log: str) -> dict[str, int]:
    """The most worker nodes of each type the autoscaler held at once (active, launching or pending), over the
    status reports of a piece of its log (:meth:`LocalCluster.autoscaler_log`). Unlike :func:`launched_nodes` it
    does not count a node twice when a short idle timeout let a node go between two attempts of one run (a Ray
    Train worker group that timed out waiting for its nodes and retried, say): it is what a run needed at once."""
    peaks: dict[str, int] = {}
    for report in log.split("Autoscaler status")[1:]:
        held: dict[str, int] = {}
        nodes = report.split("Recent failures:")[0]
        active, _, pending = nodes.partition("Pending:")
        for count, kind in re.findall(r"^ (\d+) (\S+)$", active, flags=re.M):
            held[kind] = held.get(kind, 0) + int(count)
        for kind, count in re.findall(r"^ (\S+), (\d+) launching$", pending, flags=re.M):
            held[kind] = held.get(kind, 0) + int(count)
        for kind in re.findall(r"^ \S+: (\S+), \S+", pending, flags=re.M):
            held[kind] = held.get(kind, 0) + 1
        for kind, count in held.items():
            if kind != FAKE_HEAD_TYPE:
                peaks[kind] = max(peaks.get(kind, 0), count)
    return peaks


def local_autoscaler_config(
    gcs_address: str, *, source: Path = CLUSTER_YAML, idle_timeout_minutes: float = 0.1
) -> dict[str, Any]:
    """Ray's fake multi-node provider's config, derived from ``cluster.yaml`` so that the two cannot drift: the
    same node types with the same min/max workers and the same cluster ``max_workers``. Scaled down for one
    2-core machine, and only there: each type's CPUs capped at :data:`LOCAL_CPUS_PER_NODE`, ``GPU`` renamed
    :data:`FAKE_GPU` (a fake node has no CUDA device behind it), and the idle timeout (10 minutes in
    ``cluster.yaml``) given by the caller. The head keeps its resources (``CPU: 0``) under the fake provider's
    head type name."""
    import yaml

    cluster = yaml.safe_load(source.read_text())
    types: dict[str, Any] = {}
    for name, node_type in cluster["available_node_types"].items():
        resources = dict(node_type.get("resources") or {})
        if "CPU" in resources:
            resources["CPU"] = min(resources["CPU"], LOCAL_CPUS_PER_NODE)
        if "GPU" in resources:
            resources[FAKE_GPU] = resources.pop("GPU")
        head = name == cluster["head_node_type"]
        types[FAKE_HEAD_TYPE if head else name] = {
            "resources": resources,
            "node_config": {},
            "min_workers": 0 if head else node_type.get("min_workers", 0),
            "max_workers": 0 if head else node_type.get("max_workers", 0),
        }
    empty: dict[str, Any] = {key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands")}
    empty |= {key: [] for key in ("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")}
    return {
        "cluster_name": cluster["cluster_name"],
        "max_workers": cluster["max_workers"],
        "idle_timeout_minutes": idle_timeout_minutes,
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            # Create as many nodes as the autoscaler asks for at once: by default the fake provider creates one a
            # request whatever the count, so the autoscaler, short of nodes, asks again (3 launched for 2 needed).
            "launch_multiple": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {},
        "docker": {},
        "head_node_type": FAKE_HEAD_TYPE,
        "available_node_types": types,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        **empty,
    }


def fake_gpu_as_gpu_scorer(
    node_resources: dict[str, float], resources: list[dict[str, float]], node_type: str, **options: Any
) -> Any:  # noqa: ANN401 - the autoscaler's own score tuple
    """Ray's default utilization scorer, with :data:`FAKE_GPU` read as ``GPU``. The autoscaler keeps GPU node
    types for GPU work (it scores a GPU node low for a CPU-only demand), but only for the resource named ``GPU``:
    with ``GPU`` renamed, a 1-CPU task could launch a ``gpu_worker`` here where on the real cluster it launches a
    ``cpu_worker``. Named by ``RAY_AUTOSCALER_UTILIZATION_SCORER`` on the head of :func:`autoscaling_cluster`."""
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer

    def as_gpu(bundle: dict[str, float]) -> dict[str, float]:
        return {("GPU" if key == FAKE_GPU else key): value for key, value in bundle.items()}

    return _default_utilization_scorer(as_gpu(node_resources), [as_gpu(r) for r in resources], node_type, **options)


def write_local_autoscaler_config(cluster: LocalCluster, **options: Any) -> Path:
    """:func:`local_autoscaler_config` for ``cluster``'s head, as a file (what ``--autoscaling-config`` and
    ``RAYDD_AUTOSCALER_CONFIG`` take)."""
    cluster.root.mkdir(parents=True, exist_ok=True)
    path = cluster.root / "autoscaler.yaml"
    path.write_text(json.dumps(local_autoscaler_config(cluster.address, **options), indent=1))
    return path


@contextlib.contextmanager
def autoscaling_cluster(
    root: Path, *, s3_port: int | None = None, idle_timeout_minutes: float = 0.1
) -> Iterator[LocalCluster]:
    """A head started with :func:`local_autoscaler_config` (``RAY_FAKE_CLUSTER=1``) and no worker nodes: the
    autoscaler launches them as demand comes. Drivers get ``RAYDD_AUTOSCALER_CONFIG`` pointing at the config."""
    cluster = LocalCluster(root, s3_port=s3_port)
    try:
        config = write_local_autoscaler_config(cluster, idle_timeout_minutes=idle_timeout_minutes)
        cluster.start_head(
            autoscaling_config=config,
            env={
                "RAY_FAKE_CLUSTER": "1",
                "AUTOSCALER_UPDATE_INTERVAL_S": "5",
                "RAYDD_AUTOSCALER_CONFIG": str(config),
                "RAY_AUTOSCALER_UTILIZATION_SCORER": f"{__name__}.{fake_gpu_as_gpu_scorer.__name__}",
            },
        )
        yield cluster
    finally:
        cluster.shutdown()


@contextlib.contextmanager
def local_cluster(root: Path, *, workers: int = 2, s3_port: int | None = None, **head: Any) -> Iterator[LocalCluster]:
    """A started :class:`LocalCluster` with ``workers`` 1-CPU worker nodes; shut down on exit."""
    cluster = LocalCluster(root, s3_port=s3_port)
    try:
        cluster.start_head(**head)
        for _ in range(workers):
            cluster.add_node(1)
        yield cluster
    finally:
        cluster.shutdown()
