"""Test faults come from $RAYDD_FAULTS only, through one hook, ``raydd.faults.fire``: a no-op when unset, a malformed
value refused in one line, a once-fault fired once per scope (its marker in the store, seen by every process), and
no product function or config anywhere else in raydd/ takes a fault parameter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from raydd.errors import RayddError
from raydd.faults import FAULTS, MARKERS, active_faults, environment, fire, marker_location
from raydd.storage import exists, list_names, resolve

PACKAGE = Path(__file__).resolve().parents[1] / "raydd"


def test_unset_faults_fire_nothing_and_write_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RAYDD_FAULTS", raising=False)
    assert active_faults() == {}
    for fault in FAULTS.values():
        fire(fault.name, 0 if fault.positional else "x", scope=resolve(str(tmp_path)))
    monkeypatch.setenv("RAYDD_FAULTS", " ")
    fire("drop_shard_writes", "x", scope=resolve(str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_faults_are_read_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYDD_FAULTS", "fail_shard=2, fail_at_iteration=7,drop_shard_writes")
    assert active_faults() == {"fail_shard": 2, "fail_at_iteration": 7, "drop_shard_writes": None}


@pytest.mark.parametrize("value", ["fail_shard", "fail_shard=x", "fail_shard=-1", "explode=1", "drop_shard_writes=1"])
def test_a_malformed_value_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RAYDD_FAULTS", value)
    with pytest.raises(RayddError, match=r"RAYDD_FAULTS=.*: cannot read .*; expected .*fail_shard=N") as error:
        fire("fail_shard", 0)
    assert "\n" not in str(error.value)


def test_the_drivers_value_goes_to_its_ray_tasks_and_is_checked_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYDD_FAULTS", raising=False)
    assert environment() == {}  # no runtime environment of their own: the tasks reuse the warm workers
    monkeypatch.setenv("RAYDD_FAULTS", " fail_expert=1 ")
    assert environment() == {"RAYDD_FAULTS": "fail_expert=1"}
    monkeypatch.setenv("RAYDD_FAULTS", "fail_expert=one")
    with pytest.raises(RayddError, match="cannot read 'fail_expert=one'"):
        environment()


def test_an_injection_point_with_an_unknown_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown fault 'fail_shards'"):
        fire("fail_shards", 0)


def test_a_fault_fires_only_at_its_position_and_every_time_unless_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYDD_FAULTS", "fail_shard=2")
    fire("fail_shard", 1)
    for _ in range(2):  # a crashed writer crashes again: the run fails, a re-run without the fault completes
        with pytest.raises(RuntimeError, match="injected fault fail_shard=2"):
            fire("fail_shard", 2)


def test_a_once_fault_fires_once_per_scope_and_key_across_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAYDD_FAULTS", "drop_shard_writes")
    scope, other = resolve(str(tmp_path / "a")), resolve(str(tmp_path / "b"))
    with pytest.raises(ConnectionResetError, match="injected fault drop_shard_writes at s1"):
        fire("drop_shard_writes", "s1", scope=scope)
    fire("drop_shard_writes", "s1", scope=scope)  # the retry goes on
    assert exists(marker_location(scope, "drop_shard_writes", "s1"))
    with pytest.raises(ConnectionResetError):
        fire("drop_shard_writes", "s2", scope=scope)
    with pytest.raises(ConnectionResetError):
        fire("drop_shard_writes", "s1", scope=other)
    # Another process (a Ray worker on another node, a re-run) sees the markers: nothing fires there.
    code = f"from raydd.faults import fire; fire('drop_shard_writes', 's1', scope={scope.uri!r})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert list_names(scope.child(MARKERS)) == ["drop_shard_writes-s1", "drop_shard_writes-s2"]


def test_a_once_fault_keeps_its_marker_in_an_s3_store(monkeypatch: pytest.MonkeyPatch, s3_bucket: str) -> None:
    """On a cluster the scope is in the store, which every node reaches: no local file decides."""
    monkeypatch.setenv("RAYDD_FAULTS", "fail_expert=1")
    scope = f"{s3_bucket}/store/experts/builtin/convnet"
    fire("fail_expert", 0, scope=scope)  # another expert: nothing
    marker = marker_location(resolve(scope), "fail_expert", 1)
    assert not exists(marker)
    code = f"from raydd.faults import fire; fire('fail_expert', 1, scope={scope!r})"
    first = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert first.returncode == 1 and exists(marker)  # it died, after leaving its marker
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)  # the retry runs through


def test_a_counted_fault_fires_once_its_count_is_reached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAYDD_FAULTS", "interrupt_after_trials=2")
    code = (
        "import signal, sys; from raydd.faults import fire\n"
        "signal.signal(signal.SIGUSR1, lambda *_: sys.exit(7))\n"
        f"for finished in (0, 1, 3): fire('interrupt_after_trials', finished, scope={str(tmp_path)!r})\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 7  # at 3: 2 was passed over
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0  # once


# ---- the rule: faults live in raydd/faults.py only ------------------------------------------------------------


def _fault_like(name: str) -> bool:
    """A name that speaks of injected faults: a word ``fail`` or ``fault...`` (not ``failures``, ``failed`` or
    ``default``), or a known fault's name."""
    words = name.lower().strip("_").split("_")
    return any(w == "fail" or w.startswith("fault") for w in words) or any(f in name.lower() for f in FAULTS)


def _declared_names(tree: ast.Module) -> list[tuple[int, str]]:
    """Functions, their parameters, classes and their fields, and module-level names."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]
            found += [(node.lineno, node.name)] + [(a.lineno, a.arg) for a in every if a is not None]
        elif isinstance(node, ast.ClassDef):
            found.append((node.lineno, node.name))
            found += [
                (s.lineno, s.target.id) for s in node.body if isinstance(s, ast.AnnAssign) and hasattr(s.target, "id")
            ]
    for statement in tree.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else []
        found += [(t.lineno, t.id) for t in targets if isinstance(t, ast.Name)]
    return found


PRODUCT = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "faults.py")


@pytest.mark.parametrize("module", PRODUCT)
def test_no_product_signature_or_config_takes_a_fault(module: str) -> None:
    text = (PACKAGE / module).read_text()
    offending = [f"{module}:{line} {name}" for line, name in _declared_names(ast.parse(text)) if _fault_like(name)]
    assert not offending, f"fault plumbing outside raydd/faults.py (call faults.fire there instead): {offending}"
    for variable in ("RAYDD_FAULTS", "RAYDD_TEST_"):
        assert variable not in text, f"{module} reads {variable}: only raydd/faults.py reads the faults"


def test_the_rule_catches_the_old_plumbing() -> None:
    old = """
def write_shard(spec, plan, fail: bool = False, fail_once_dir: str | None = None): ...
def train_with_fault(task, marker): ...
class RunSettings:
    fail_at_iteration: int = -1
    max_failures: int = 0
class SweepSettings:
    interrupt_after_trials: int = -1
FAIL_ONCE_ENV = "RAYDD_TEST_FAIL_ONCE_DIR"
def resolve_defaults(config, default_store, failed: bool): ...
"""
    caught = sorted(name for _, name in _declared_names(ast.parse(old)) if _fault_like(name))
    assert caught == [
        "FAIL_ONCE_ENV",
        "fail",
        "fail_at_iteration",
        "fail_once_dir",
        "interrupt_after_trials",
        "train_with_fault",
    ]
