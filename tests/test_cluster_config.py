"""cluster.yaml and jobs/*.yaml, checked offline by the validators Ray and AWS ship, not by a copy of them.

cluster.yaml goes through what `ray up` runs before it first calls AWS (``prepare_config`` then
``validate_config``: Ray's JSON schema plus its cross-field checks), and its node configs through the
RunInstances input model of EC2 that botocore ships. A job spec holds the keyword arguments of
``JobSubmissionClient.submit_job``; each `python -m raydd.X ...` of its entrypoint is resolved by that
command's own ``--print-config``. Creating the cluster and running the jobs needs an AWS account.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import inspect
import json
import re
import shlex
import string
import subprocess
from pathlib import Path
from typing import Any

import botocore.session
import jsonschema
import pytest
import ray
import yaml
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.dashboard.modules.job.common import JobSubmitRequest
from ray.job_submission import JobSubmissionClient
from ray.runtime_env import RuntimeEnv

from raydd.distill.settings import DistillConfig
from raydd.distill.stage_presets import resolve_presets
from raydd.experts.job import ExpertsConfig
from raydd.planning.distill import distill_demands
from raydd.planning.tasks import experts_demands, tune_demands
from raydd.resources import Capacity, Demand, NodeShape, capacity_from_autoscaler, place
from raydd.tune import TuneConfig

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
# The variables cluster.yaml exports on every node, with values for the test. Entrypoints may use only these.
CLUSTER_ENV = {"RAYDD_STORE": "s3://raydd-test/store", "RAYDD_RAW": "s3://raydd-test/raw"}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """The checks `ray up` makes before its first AWS call (commands._bootstrap_config)."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_validation() -> None:
    prepared = ray_up_checks(load(CLUSTER))
    assert prepared["provider"]["type"] == "aws"
    head = prepared["head_node_type"]
    head_resources = prepared["available_node_types"][head]["resources"]
    assert head_resources == {"CPU": 0}, "the head keeps its cores for drivers, dashboard, MLflow"
    gpu_types = [
        t for name, t in prepared["available_node_types"].items() if name != head and t["resources"].get("GPU", 0) >= 1
    ]
    assert gpu_types and all(t["min_workers"] == 0 for t in gpu_types), "GPU workers must scale from zero"
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-port=8265" in head_start and "--metrics-export-port=8080" in head_start


def test_cluster_yaml_exports_what_the_jobs_use() -> None:
    commands = " ".join(load(CLUSTER)["setup_commands"])
    for name in CLUSTER_ENV:
        assert re.search(rf"export {name}=s3://", commands), f"cluster.yaml does not export {name} as an s3:// URI"
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert "export MLFLOW_TRACKING_URI=http://" in " ".join(load(CLUSTER)[key])


def test_gpu_workers_share_one_availability_zone() -> None:
    """NCCL's all-reduces (MTT: two of the whole gradient per student step) must not cross zones. Ray chooses every
    node type's subnets from the provider's zones unless a node type names its own SubnetIds."""
    config = load(CLUSTER)
    zones = [zone.strip() for zone in config["provider"]["availability_zone"].split(",")]
    assert len(zones) == 1 and zones[0].startswith(config["provider"]["region"]), zones
    for name, node_type in config["available_node_types"].items():
        if node_type.get("resources", {}).get("GPU"):
            assert "SubnetIds" not in node_type["node_config"], f"{name} would leave the provider's zone"


def test_the_image_is_pinned_to_this_ray_and_the_cuda_of_the_torch_build_it_installs() -> None:
    config = load(CLUSTER)
    image = config["docker"]["image"]
    found = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-cu(\d+)", image)
    assert found, f"{image}: not an exact rayproject/ray CUDA tag (a -gpu alias does not say its CUDA)"
    ray_version, major, minor, cuda = found.groups()
    assert ray_version == ray.__version__, f"{image}: the client runs Ray {ray.__version__}"
    pinned = next(Requirement(r) for r in importlib.metadata.requires("raydd") or [] if Requirement(r).name == "ray")
    assert pinned.specifier.contains(ray_version), f"{image}: outside pyproject's {pinned}"
    python = SpecifierSet(importlib.metadata.metadata("raydd")["Requires-Python"])
    assert python.contains(f"{major}.{minor}"), f"{image}: Python {major}.{minor} is outside pyproject's {python}"
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    assert installs == [f"pip install -q -e ~/raydd --extra-index-url https://download.pytorch.org/whl/cu{cuda}"], (
        "each node installs raydd alone, its torch the image's CUDA build"
    )
    every = [c for key, value in config.items() if key.endswith("_commands") for c in value]
    assert sum("pip install" in c for c in every) == 1, "no other command installs packages (torch above all)"
    gpu_amis = {
        t["node_config"].get("ImageId") for t in config["available_node_types"].values() if t["resources"].get("GPU")
    }
    assert all(ami and "nvidia-driver" in ami for ami in gpu_amis), "GPU nodes name the AMI whose driver runs CUDA"
    assert any("torch.cuda.is_available()" in c for c in config["worker_setup_commands"]), "a GPU node checks it"


def _set_gpu_worker(**fields: Any):
    return lambda config: config["available_node_types"]["gpu_worker"].update(fields)


@pytest.mark.parametrize(
    ("break_it", "error", "message"),
    [
        pytest.param(
            _set_gpu_worker(min_workers=99),
            ValueError,
            "smaller than the sum of `min_workers`",
            id="min_workers-above-max_workers",
        ),
        pytest.param(lambda config: config.pop("provider"), KeyError, "provider", id="no-provider"),
        pytest.param(
            _set_gpu_worker(min_worker=0),
            jsonschema.ValidationError,
            "'min_worker' was unexpected",
            id="misspelt-field",
        ),
        pytest.param(
            _set_gpu_worker(resources={"GPU": 0.5}),
            jsonschema.ValidationError,
            "not of type 'integer'",
            id="fractional-gpu",
        ),
        pytest.param(
            lambda config: config.update(head_node_type="cpu_head"),
            ValueError,
            "must be one of",
            id="undeclared-head-type",
        ),
    ],
)
def test_rays_validation_rejects_a_broken_copy(break_it, error: type[Exception], message: str) -> None:
    config = load(CLUSTER)
    break_it(config)
    with pytest.raises(error, match=re.escape(message)):
        ray_up_checks(config)


def test_node_configs_are_ec2_run_instances_arguments() -> None:
    """Ray hands node_config to EC2's RunInstances as is; its schema leaves node_config unchecked."""
    run_instances = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    for name, node_type in load(CLUSTER)["available_node_types"].items():
        node_config = node_type["node_config"]
        validate_parameters({**node_config, "MinCount": 1, "MaxCount": 1}, run_instances)
        assert node_config["InstanceType"] in run_instances.members["InstanceType"].enum, name
    with pytest.raises(ParamValidationError, match="InstanceTyp"):
        validate_parameters({"InstanceTyp": "g5.2xlarge", "MinCount": 1, "MaxCount": 1}, run_instances)


def test_every_workflow_has_a_job() -> None:
    assert {path.stem for path in JOBS} >= {"k400", "ssv2", "miniucf", "builtin"}


@pytest.mark.parametrize("path", JOBS, ids=[path.stem for path in JOBS])
def test_job_is_a_submit_job_call(path: Path) -> None:
    spec = load(path)
    inspect.signature(JobSubmissionClient.submit_job).bind(None, **spec)  # TypeError on a key it does not take
    JobSubmitRequest(**spec)  # the body the job server receives: types of metadata, resources, ...
    runtime_env = spec.get("runtime_env") or {}
    assert set(runtime_env) <= RuntimeEnv.known_fields, (
        f"unknown runtime_env fields {set(runtime_env) - RuntimeEnv.known_fields}"
    )
    RuntimeEnv(**runtime_env)
    assert f"jobs/{path.name}" in path.read_text(), "the submit line in the header names another file"


def _flags(argv: list[str]) -> dict[str, Any]:
    """{field: value as written, or True/False for --flag/--no-flag}."""
    flags, i = {}, 0
    while i < len(argv):
        assert argv[i].startswith("--"), f"stray argument {argv[i]!r}"
        name = argv[i][2:].replace("-", "_")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            flags[name], i = argv[i + 1], i + 2
        else:
            flags[name.removeprefix("no_")], i = not name.startswith("no_"), i + 1
    return flags


def _print_config(module_name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    if hasattr(module, "__path__"):  # a package: `python -m` runs its __main__
        module = importlib.import_module(f"{module_name}.__main__")
    capsys.readouterr()
    try:
        code = module.main([*argv, "--print-config"])
    except SystemExit as exit_:
        pytest.fail(f"python -m {module_name} {shlex.join(argv)}: exit {exit_.code}: {capsys.readouterr().err}")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def resolved_stages(path: Path, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, dict[str, Any]]]:
    """(module, printed config) of each `&&`-chained command, with the cluster's variables expanded."""
    stages = []
    for command in load(path)["entrypoint"].split("&&"):
        words = shlex.split(string.Template(command).substitute(CLUSTER_ENV))  # KeyError: a variable the cluster lacks
        assert words[:2] == ["python", "-m"] and words[2].startswith("raydd."), f"not a raydd command: {command}"
        module, argv = words[2], words[3:]
        config = _print_config(module, argv, capsys)
        for field, given in _flags(argv).items():
            assert field in config, (
                f"{module}: --{field.replace('_', '-')} is no flag of its own (argparse read it as an abbreviation)"
            )
            actual = config[field]
            expected = given if isinstance(given, bool) else type(actual)(given)
            assert actual == expected, f"{module} --{field}: printed {actual!r}, given {given!r}"
        stages.append((module, config))
    return stages


@pytest.mark.parametrize("path", JOBS, ids=[path.stem for path in JOBS])
def test_job_commands_resolve_with_print_config(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for module, config in resolved_stages(path, capsys):
        if module == "raydd.distill":
            resolve_presets(DistillConfig(**config))  # the preset table has this method x paradigm x dataset x IPC


@pytest.mark.parametrize("path", JOBS, ids=[path.stem for path in JOBS])
def test_job_stages_hand_off_in_one_store(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each stage reads what an earlier one in the chain wrote, all in the cluster's store."""
    prepared, experts, distilled = set(), set(), set()
    for module, config in resolved_stages(path, capsys):
        assert config["store"] == CLUSTER_ENV["RAYDD_STORE"], f"{module} writes outside $RAYDD_STORE"
        if module == "raydd.prepare":
            prepared.add(config["dataset"])
        elif module == "raydd.experts":
            assert config["dataset"] in prepared
            experts.add((config["dataset"], config["model"]))
        elif module == "raydd.distill":
            assert config["dataset"] in prepared
            if config["method"] == "mtt":
                assert {(config["dataset"], "minic3d"), (config["dataset"], "convnet")} <= experts
            distilled.add(config["output"])
        elif module == "raydd.evaluate":
            assert config["data"] in distilled, f"evaluate reads {config['data']}, which no distill of this job wrote"


def test_every_node_mounts_one_cache_folder_and_names_it_in_raydd_cache(tmp_path: Path) -> None:
    """initialization_commands mount the instance NVMe (else keep a folder on the root volume); the container
    mounts that folder and names it in RAYDD_CACHE, which every Ray process there inherits."""
    config = load(CLUSTER)
    options = config["docker"]["run_options"]
    cache = next(o.split("=", 1)[1] for o in options if o.startswith("-e RAYDD_CACHE="))
    assert f"-v {cache}:{cache}" in options
    (command,) = config["initialization_commands"]
    assert f'sudo mount "$DEV" {cache}' in command and f"sudo mkdir -p {cache}" in command
    assert "Instance Storage" in command  # the model name of an EC2 instance-store NVMe device in lsblk
    script = tmp_path / "init.sh"
    script.write_text(command)
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    families = {t["node_config"]["InstanceType"].split(".")[0] for t in workers}
    assert families == {"c5d", "g5"}, "worker types with local NVMe"


def cluster_capacity() -> Capacity:
    """cluster.yaml scaled to zero: the head alone, and every worker its autoscaler may launch."""
    config = load(CLUSTER)
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    alive = (NodeShape(head.get("CPU", 0), head.get("GPU", 0), "head"),)
    return capacity_from_autoscaler(config, alive, "cluster.yaml", {"g5": 23028 << 20})


@pytest.mark.parametrize("path", JOBS, ids=[path.stem for path in JOBS])
def test_job_resources_fit_cluster_yaml(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What each stage asks Ray for, with its automatic defaults resolved on cluster.yaml's node types, can be
    placed there (a Ray Train run waits forever for workers that never fit); GPU stages run on GPUs."""
    capacity = cluster_capacity()
    for module, config in resolved_stages(path, capsys):
        if module == "raydd.distill":
            use_gpu, _, demands = distill_demands(DistillConfig(**config), capacity)
            assert use_gpu
        elif module == "raydd.experts":
            gpus, demands = experts_demands(ExpertsConfig(**config), capacity)
            assert gpus > 0
        elif module == "raydd.tune":
            _, demands = tune_demands(TuneConfig(**config), capacity)
        elif module == "raydd.evaluate":
            runs = Demand("evaluation runs", config["runs"], config["cpus_per_run"], config["gpus_per_run"], gang=False)
            demands = [runs]
        else:
            demands = [Demand(f"{module} tasks", config.get("workers") or 1, 1, 0, gang=False)]
        placement = place(demands, capacity)
        assert placement.fits, f"{path.name}: {module}: {placement.reason}"
