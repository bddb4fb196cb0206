"""cluster.yaml's security properties (issue 15): nothing listens publicly, workers get a narrow instance profile."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

CLUSTER = yaml.safe_load((Path(__file__).resolve().parents[1] / "cluster.yaml").read_text())


def _commands() -> str:
    keys = ("head_setup_commands", "head_start_ray_commands", "worker_start_ray_commands", "setup_commands")
    return "\n".join(command for key in keys for command in CLUSTER.get(key, []))


def test_no_service_binds_every_interface() -> None:
    commands = _commands()
    assert "0.0.0.0" not in commands
    assert "--dashboard-host=127.0.0.1" in commands
    mlflow = re.search(r"mlflow server (.*?);", commands, re.S)
    assert mlflow is not None and "--host $MLFLOW_HOST" in mlflow.group(1)
    assert "hostname -I" in "\n".join(CLUSTER["head_setup_commands"])  # the head's private address


def test_mlflow_is_one_sqlite_writer_restarted_when_it_dies() -> None:
    commands = _commands()
    assert "--workers 1" in commands and "sqlite:///" in commands
    assert re.search(r"while true; do mlflow server .*?; done", commands, re.S)


def test_workers_do_not_get_the_heads_instance_profile() -> None:
    types = CLUSTER["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}
    for name, node in types.items():
        if name != CLUSTER["head_node_type"]:
            assert node["node_config"]["IamInstanceProfile"] == {"Name": "raydd-worker"}, name
