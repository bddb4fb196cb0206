"""Dependencies point one way: components never import Ray or MLflow; storage knows no videos or torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raydd"

# Modules allowed to import Ray: the entry modules, the Ray plumbing and metrics, the Ray Data and Ray Train adapters.
RAY_ALLOWED = {
    "prepare.py",
    "metrics.py",
    "parallel.py",
    "data/ray_reader.py",
    "experts/__main__.py",
    "distill/ray_train.py",
    "tuning/ray_tune.py",
}
RAY_ALLOWED |= {"cluster.py"}  # reads a cluster's capacity for --plan and the automatic defaults
MLFLOW_ALLOWED = {"tracking.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module if node.module.startswith("raydd") else node.module.split(".")[0])
    return names


MODULES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_only_entry_points_and_adapters_import_ray_or_mlflow(module: str) -> None:
    imported = _imports(PACKAGE / module)
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
        imported = _imports(PACKAGE / module)
        assert not imported & {"ray", "mlflow", "fsspec"}, module


@pytest.mark.parametrize("module", ["storage.py", "locations.py"])
def test_storage_knows_bytes_not_videos(module: str) -> None:
    imported = _imports(PACKAGE / module)
    assert not imported & {"torch", "av", "numpy", "pyarrow", "ray"}
    assert not any(name.startswith("raydd.data") for name in imported)


# The modules `python -m raydd.X` runs.
COMMAND_FILES = {
    "prepare.py",
    "evaluate.py",
    "tune.py",
    "pipeline.py",
    "analyse.py",
    "experts/__main__.py",
    "distill/__main__.py",
}
COMMANDS = {"raydd." + f.removesuffix(".py").replace("/", ".") for f in COMMAND_FILES}


@pytest.mark.parametrize("module", [m for m in MODULES if m not in COMMAND_FILES])
def test_engines_never_import_commands(module: str) -> None:
    """Commands call engines, never the reverse (a module importing a ``python -m raydd.X`` module)."""
    assert not _imports(PACKAGE / module) & COMMANDS, module


@pytest.mark.parametrize("module", sorted(COMMAND_FILES))
def test_commands_are_thin_and_import_no_other_command(module: str) -> None:
    """A command parses a typed config, calls one engine function and prints: 80 lines at most."""
    assert len((PACKAGE / module).read_text().splitlines()) <= 80, module
    own = "raydd." + module.removesuffix(".py").replace("/", ".")
    assert not _imports(PACKAGE / module) & (COMMANDS - {own, "raydd.distill", "raydd.experts"}), module


@pytest.mark.parametrize("module", MODULES)
def test_no_module_is_over_300_lines(module: str) -> None:
    assert len((PACKAGE / module).read_text().splitlines()) <= 300, module
