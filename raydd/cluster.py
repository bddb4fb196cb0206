"""What a Ray cluster offers, for ``--plan`` and the automatic defaults (GPUs when there are some, CPUs per worker).

Read, never changed: the resources of the alive nodes (``ray.nodes()`` in a connected driver, else Ray's
state API at ``--ray-address``/``RAY_ADDRESS``, which takes the dashboard's ``http://host:8265`` too), plus
what the autoscaler may still launch. Ray's v1 autoscaler keeps its node types only in its config file,
which ``ray up`` copies to the head as ``~/ray_bootstrap_config.yaml``: a job's driver runs on the head and
reads it there; elsewhere ``RAYDD_AUTOSCALER_CONFIG`` may name a copy (``cluster.yaml`` itself will do), and
names the cluster to plan for before it exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray

from raydd.errors import RayddError
from raydd.resources import EC2_GPU_MEMORY, Capacity, NodeShape, capacity_from_autoscaler, node_shape

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
ADDRESS_VARIABLE = "RAY_ADDRESS"  # Ray's own: the cluster a driver joins
AUTOSCALER_CONFIG_VARIABLE = "RAYDD_AUTOSCALER_CONFIG"


def ray_address(given: str | None = None) -> str | None:
    """The Ray cluster to join or read: ``given`` (``--ray-address``), else ``RAY_ADDRESS``; None for none."""
    return given or os.environ.get(ADDRESS_VARIABLE) or None


def named_autoscaler_config() -> str | None:
    """The autoscaler config ``RAYDD_AUTOSCALER_CONFIG`` names, if any."""
    return os.environ.get(AUTOSCALER_CONFIG_VARIABLE) or None


def _alive_nodes(address: str | None) -> tuple[list[NodeShape], str] | None:
    if ray.is_initialized():
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        return [
            node_shape(node["Resources"], node.get("NodeManagerAddress", "")) for node in nodes
        ], "the connected Ray cluster"
    address = ray_address(address)
    if not address:
        return None
    from ray.util.state import list_nodes

    try:
        # Once a node has died, the State API counts it and takes the ALIVE-filtered answer for a truncated one
        # ("Failed to retrieve all 5 nodes ..."): a cluster that lost a node would be unreadable. It is whole.
        nodes = list_nodes(
            address=address,
            filters=[("state", "=", "ALIVE")],
            detail=True,
            timeout=10,
            raise_on_missing_output=False,
        )
    except Exception as error:  # the state API raises a handful of types for an unreachable cluster
        raise RayddError(
            f"cannot read the Ray cluster at {address} ({type(error).__name__}: {first_line(error)}): "
            "check --ray-address / RAY_ADDRESS (the dashboard's http://HOST:8265 works), or drop it to plan without one"
        ) from None
    return [node_shape(node.resources_total, node.node_ip) for node in nodes], f"the Ray cluster at {address}"


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else ""


def _autoscaler_config() -> dict[str, Any] | None:
    path = Path(os.path.expanduser(named_autoscaler_config() or BOOTSTRAP_CONFIG))
    if not path.is_file():
        return None
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def capacity(address: str | None = None) -> Capacity | None:
    """The cluster this process is connected to, else the one at ``address``/``RAY_ADDRESS``; else, when
    ``RAYDD_AUTOSCALER_CONFIG`` names one, the cluster that config would start (its head, and every worker its
    autoscaler may launch); ``None`` without any. Does not join a cluster (no ``ray.init``)."""
    alive = _alive_nodes(address)
    config = _autoscaler_config()
    if alive is None:
        named = named_autoscaler_config()
        if config is None or not named:
            return None
        head = ((config.get("available_node_types") or {}).get(config.get("head_node_type")) or {}).get(
            "resources"
        ) or {}
        source = f"{named} before `ray up` (its head and every worker its autoscaler may launch)"
        return capacity_from_autoscaler(config, (node_shape(head, "head"),), source, EC2_GPU_MEMORY)
    nodes, source = alive
    if config is None:
        return Capacity(nodes=tuple(nodes), source=source)
    return capacity_from_autoscaler(config, tuple(nodes), f"{source} and its autoscaler's node types", EC2_GPU_MEMORY)
