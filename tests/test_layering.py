"""The architecture picture of docs/architecture.md as data, and the imports held against it.

Four layers, bottom-up: foundation -> components -> engines -> commands. Each layer is a list of rooms,
also bottom-up: a room is a module or a package folder of ``raydd/`` (a module belongs to the longest room
that holds it). A module may import any module of its own room, any room of a lower layer, and the rooms
listed before its own in its layer; nothing else: not a higher layer, not a room beside or above it. Every
import counts: at the top or inside a function, absolute or relative, and a module named to
``importlib.import_module``. Besides direction: only the entry modules and the adapters import Ray, only
``tracking`` imports MLflow, storage knows bytes and not videos, commands are thin.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raydd"

LAYERS: dict[str, tuple[str, ...]] = {
    # Configs, URIs, bytes, Ray resources and plumbing, tracking: no videos, no networks.
    "foundation": (
        "errors.py",
        "console.py",
        "provenance.py",
        "ports.py",
        "classes.py",
        "devices.py",
        "locations.py",
        "storage.py",
        "faults.py",
        "layout.py",
        "reaper.py",
        "metrics.py",
        "resources.py",
        "cluster.py",
        "parallel.py",
        "tracking.py",
        "config.py",
    ),
    # Pure torch and Arrow pieces: data, networks, the artifact, and the parts each engine is made of.
    # Evaluation sits below experts and distillation: it needs only a training set and its manifest.
    "components": (
        "data/",
        "models/",
        "distilled_set.py",
        "evaluation/",
        "experts/",
        "distill/",
    ),
    # One job each, on Ray; the plans of --plan; then the engines that run other engines' parts.
    "engines": (
        "data/preparation.py",
        "evaluation/job.py",
        "experts/job.py",
        "distill/ray_train.py",
        "distill/driver.py",
        "planning/",
        "pipeline/",
        "tuning/",
        "analysis/",
    ),
    # `python -m raydd.X`, and the package's public face (raydd.load_distilled, raydd.__version__).
    "commands": (
        "prepare.py",
        "evaluate.py",
        "experts/__main__.py",
        "distill/__main__.py",
        "pipeline/__main__.py",
        "tune.py",
        "analyse.py",
        "__init__.py",
    ),
}
ROOMS = [(layer, room) for layer, rooms in LAYERS.items() for room in rooms]
RANK = {room: rank for rank, (_, room) in enumerate(ROOMS)}
LAYER_OF = dict((room, layer) for layer, room in ROOMS)
LAYER_RANK = {layer: rank for rank, layer in enumerate(LAYERS)}


def _module_name(path: Path) -> str:
    parts = ["raydd", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
MODULES = sorted(p.relative_to(PACKAGE).as_posix() for p in FILES.values())


def room_of(module: str) -> str | None:
    """The longest room holding ``module`` (a path under raydd/), None when the picture has none."""
    holding = [room for room in RANK if module == room or (room.endswith("/") and module.startswith(room))]
    return max(holding, key=len, default=None)


def _resolve(name: str) -> str | None:
    """The raydd module that ``name`` (a module, or a name inside one) comes from."""
    while name and name not in FILES:
        name = name.rpartition(".")[0]
    return name or None


def raydd_imports(path: Path, source: str | None = None) -> dict[str, int]:
    """Every raydd module ``path`` imports (``source``: its text, when not the file's), with the line of the first."""
    source = path.read_text() if source is None else source
    own = _module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    dynamic = "import_module" in source
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names]
        elif dynamic and isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in FILES:
            names = [node.value]
        for name in names:
            target = _resolve(name) if name.startswith("raydd") else None
            if target and target != own:
                found.setdefault(target, node.lineno)
    return found


def forbidden(path: Path, source: str | None = None) -> list[str]:
    """The imports of ``path`` that the picture forbids, as ``module:line -> module (rooms and layers)``."""
    here = room_of(path.relative_to(PACKAGE).as_posix())
    wrong = []
    for target, line in raydd_imports(path, source).items():
        there = room_of(FILES[target].relative_to(PACKAGE).as_posix())
        if here is None or there is None or there == here:
            continue
        up_a_layer = LAYER_RANK[LAYER_OF[there]] > LAYER_RANK[LAYER_OF[here]]
        beside_or_above = LAYER_OF[there] == LAYER_OF[here] and RANK[there] > RANK[here]
        if up_a_layer or beside_or_above:
            wrong.append(
                f"{_module_name(path)}:{line} -> {target} ({LAYER_OF[here]} {here} -> {LAYER_OF[there]} {there})"
            )
    return wrong


def upward_imports() -> list[str]:
    return sorted(line for path in FILES.values() for line in forbidden(path))


def test_every_module_is_in_the_picture_and_every_room_holds_one() -> None:
    assert [m for m in MODULES if room_of(m) is None] == []
    assert [room for room in RANK if not any(room_of(m) == room for m in MODULES)] == []


def test_imports_point_down_the_picture() -> None:
    assert upward_imports() == []


def test_the_reader_sees_local_relative_and_dynamic_imports() -> None:
    """An engine named from inside a component's function, relatively, or by name to import_module, is caught;
    the same component importing down (a model) or within its room is not."""
    loop = PACKAGE / "distill" / "loop.py"
    source = (
        "import importlib\n"
        "from ..models import registry\n"
        "from . import synthetic\n"
        "def f():\n"
        "    from ..evaluation import job\n"
        "    from .driver import distill\n"
        "    return importlib.import_module('raydd.tuning.sweep')\n"
    )
    caught = sorted(line.split(" ", 1)[0] for line in forbidden(loop, source))
    assert caught == ["raydd.distill.loop:5", "raydd.distill.loop:6", "raydd.distill.loop:7"]


def _top_level_imports(path: Path) -> set[str]:
    """Third-party packages and raydd modules named by the file's imports (anywhere in it)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module if node.module.startswith("raydd") else node.module.split(".")[0])
    return names


# Modules allowed to import Ray: the entry modules, the Ray plumbing and metrics, the Ray Data and Ray Train adapters,
# and the reader of a cluster's capacity (for --plan and the automatic defaults).
RAY_ALLOWED = {
    "prepare.py",
    "metrics.py",
    "parallel.py",
    "cluster.py",
    "data/ray_reader.py",
    "experts/__main__.py",
    "distill/ray_train.py",
    "tuning/ray_tune.py",
}
MLFLOW_ALLOWED = {"tracking.py"}


@pytest.mark.parametrize("module", MODULES)
def test_only_entry_points_and_adapters_import_ray_or_mlflow(module: str) -> None:
    imported = _top_level_imports(PACKAGE / module)
    if module not in RAY_ALLOWED:
        assert "ray" not in imported, f"{module} imports ray"
    if module not in MLFLOW_ALLOWED:
        assert "mlflow" not in imported, f"{module} imports mlflow"


def test_distillation_components_know_neither_ray_nor_files_of_their_own() -> None:
    """The loop, methods and synthetic sets are pure torch: only the Ray Train adapter touches Ray."""
    for module in (
        "distill/loop.py",
        "distill/synthetic.py",
        "distill/methods/dm.py",
        "distill/methods/mtt.py",
        "distill/methods/frepo.py",
    ):
        imported = _top_level_imports(PACKAGE / module)
        assert not imported & {"ray", "mlflow", "fsspec"}, module


@pytest.mark.parametrize("module", ["storage.py", "locations.py"])
def test_storage_knows_bytes_not_videos(module: str) -> None:
    imported = _top_level_imports(PACKAGE / module)
    assert not imported & {"torch", "av", "numpy", "pyarrow", "ray"}
    assert not any(name.startswith("raydd.data") for name in imported)


COMMAND_FILES = set(LAYERS["commands"]) - {"__init__.py"}
COMMANDS = {"raydd." + f.removesuffix(".py").replace("/", ".") for f in COMMAND_FILES}


@pytest.mark.parametrize("module", sorted(COMMAND_FILES))
def test_commands_are_thin_and_import_no_other_command(module: str) -> None:
    """A command parses a typed config, calls one engine function and prints: 80 lines at most."""
    assert len((PACKAGE / module).read_text().splitlines()) <= 80, module
    own = _module_name(PACKAGE / module)
    assert not set(raydd_imports(PACKAGE / module)) & (COMMANDS - {own}), module


@pytest.mark.parametrize("module", MODULES)
def test_no_module_is_over_400_lines(module: str) -> None:
    """Cohesion, not a cap, decides what a module holds; 400 lines is where one is worth a second look."""
    assert len((PACKAGE / module).read_text().splitlines()) <= 400, module
