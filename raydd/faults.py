"""Fault injection for tests and chaos benchmarks: the one module that knows about faults.

Product code marks an injection point with one call, :func:`fire`, and takes no fault parameter anywhere:
``fire(name, at=position, scope=folder)`` is a no-op unless ``$RAYDD_FAULTS`` names the fault. The variable
holds comma-separated items, ``name=N`` for a fault at a position (an iteration, a shard, an expert, a count
reached) and a bare ``name`` for a fault without one, e.g. ``RAYDD_FAULTS=fail_at_iteration=3,drop_shard_writes``.
Unset or empty: no fault. An unknown name or a malformed item is refused in one line. The driver's value is the
run's: the Ray tasks and Ray Train workers it starts get it in their runtime environment (:func:`environment`).

A fault that fires *once* records that it fired in a marker file, ``SCOPE/.faults/NAME-KEY``, before it acts
(its act may kill the process). ``SCOPE`` is a folder in the store that the disturbed work owns (a stage's run
folder, a sweep's folder, the experts or dataset folder), so a retry on another node of a multi-node cluster, a
restart, or the same command run again sees the marker and goes on, as after a real crash. The store is the one
place every process of a run reaches; a local folder on one node is not seen on another. ``docs/testing-faults.md``
lists every fault, where it fires and how the tests and benchmarks use it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
from collections.abc import Callable

from raydd.errors import RayddError
from raydd.locations import Location
from raydd.storage import exists, resolve, write_bytes

FAULTS_VARIABLE = "RAYDD_FAULTS"
MARKERS = ".faults"  # the folder of once-markers (and of the pause's pipe) inside a fault's scope


def _crash(fault: Fault, key: str, scope: Location | None) -> None:
    """Die at once, as a process the kernel killed would: no cleanup, no exception to catch."""
    print(f"{FAULTS_VARIABLE}: {fault.name}={key}: killing process {os.getpid()}", file=sys.stderr, flush=True)
    os._exit(1)


def _raise(fault: Fault, key: str, scope: Location | None) -> None:
    raise RuntimeError(f"injected fault {fault.name}={key} ({fault.where})")


def _drop(fault: Fault, key: str, scope: Location | None) -> None:
    # An OSError that raydd.storage counts as transient, so Ray's retry of the task gets its chance.
    raise ConnectionResetError(f"injected fault {fault.name} at {key} ({fault.where})")


def _interrupt(fault: Fault, key: str, scope: Location | None) -> None:
    """The signal Ray Tune handles as it handles Ctrl-C: it saves the experiment's state and returns."""
    os.kill(os.getpid(), signal.SIGUSR1)


def _pause(fault: Fault, key: str, scope: Location | None) -> None:
    """Block until someone opens :func:`resume_pipe` for writing: a handshake, not a timed wait."""
    assert scope is not None
    if not scope.is_local:
        raise RayddError(f"the {fault.name} fault needs a local store, not {scope}: unset {FAULTS_VARIABLE}")
    pipe = resume_pipe(scope.path, fault.name)
    if not os.path.exists(pipe):
        os.mkfifo(pipe)
    print(f"{fault.name}: waiting for a writer on {pipe}", file=sys.stderr, flush=True)
    with open(pipe, "rb"):
        pass


@dataclasses.dataclass(frozen=True)
class Fault:
    name: str
    where: str  # the injection point, in words
    act: Callable[[Fault, str, Location | None], None]
    positional: bool = True  # set as name=N; else a bare name that fires at every position
    reached: bool = False  # fires when the position reaches N (a count), else when it equals N
    once: bool = True  # fires once per scope and key (a marker in the store); else every time it matches


KNOWN = (
    Fault("fail_at_iteration", "distill: rank 0 of the last stage dies after this iteration (0-based)", _crash),
    Fault(
        "fail_shard",
        "prepare: the writer of this shard (its place in the plan) fails before committing",
        _raise,
        once=False,
    ),
    Fault(
        "drop_shard_writes",
        "prepare: every shard's first write loses its storage connection before committing",
        _drop,
        positional=False,
    ),
    Fault("fail_expert", "experts: the task of this expert dies after its first epoch", _crash),
    Fault(
        "interrupt_after_trials",
        "tune: the sweep's driver is interrupted once this many trials have finished",
        _interrupt,
        reached=True,
    ),
    Fault(
        "pause_prepare_after_clips",
        "prepare: the driver waits on a named pipe once this many clips are done",
        _pause,
        reached=True,
    ),
)
FAULTS = {fault.name: fault for fault in KNOWN}


def fire(
    name: str,
    at: int | str = "",
    *,
    scope: Location | str | None = None,
    settle: Callable[[], object] | None = None,
) -> None:
    """The injection point of fault ``name``: a no-op unless ``$RAYDD_FAULTS`` sets it and ``at`` (the point's
    position: an iteration, a shard, an expert, a count) matches its value. ``scope``: the store folder whose
    work the fault disturbs (a Location or a URI, resolved only when the fault fires), where a once-fault keeps
    its marker. ``settle``: called just before the fault acts, so that a death lands where a real one would
    (Ray Train: after its last report is committed)."""
    fault = FAULTS.get(name)
    if fault is None:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    active = active_faults()
    if name not in active:
        return
    value = active[name]
    if fault.positional:
        if not isinstance(at, int):
            raise TypeError(f"fault {name} fires at an integer position, not {at!r}")
        if not (at >= value if fault.reached else at == value):
            return
    key = str(value) if fault.positional else str(at)
    if fault.once:
        if scope is None:
            raise ValueError(f"fault {name} fires once: it needs the scope that keeps its marker")
        scope = resolve(scope) if isinstance(scope, str) else scope
        marker = marker_location(scope, name, key)
        if exists(marker):
            return
        write_bytes(marker, f"{name} fired at {at} in process {os.getpid()}\n".encode())
    if settle is not None:
        settle()
    fault.act(fault, key, scope)


def environment() -> dict[str, str]:
    """``$RAYDD_FAULTS`` as the environment of the Ray tasks and workers a driver starts (empty when unset).

    The driver's value is the run's: a task's runtime environment carries it, so that a worker of a cluster
    started before the variable was set (a test session's, a warm one) fires the faults the command was given."""
    value = os.environ.get(FAULTS_VARIABLE, "").strip()
    if not value:
        return {}
    _parse(value)  # a malformed value stops the driver, in one line, before any task starts
    return {FAULTS_VARIABLE: value}


def active_faults() -> dict[str, int | None]:
    """The faults set in ``$RAYDD_FAULTS``, by name: their value, or None for a fault without one."""
    return dict(_parse(os.environ.get(FAULTS_VARIABLE, "").strip()))  # a copy: the parse is cached


@functools.lru_cache(maxsize=8)
def _parse(text: str) -> dict[str, int | None]:
    faults: dict[str, int | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, value = (part.strip() for part in item.partition("="))
        fault = FAULTS.get(name)
        number = value.isascii() and value.isdigit()
        if fault is None or (not number if fault.positional else bool(equals)):
            raise RayddError(
                f"{FAULTS_VARIABLE}={text!r}: cannot read {item!r}; expected comma-separated items among "
                f"{', '.join(f.name + ('=N' if f.positional else '') for f in KNOWN)} (N: an integer >= 0); "
                "unset it for no fault"
            )
        faults[name] = int(value) if fault.positional else None
    return faults


def marker_location(scope: Location, name: str, key: int | str) -> Location:
    """Where fault ``name`` records that it fired at ``key`` (its value, or the bare fault's position)."""
    return scope.child(MARKERS, f"{name}-{key}")


def resume_pipe(scope: str, name: str = "pause_prepare_after_clips") -> str:
    """The named pipe a pause fault waits on, in the local folder ``scope``: it goes on once a writer opens it."""
    folder = os.path.join(scope, MARKERS)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{name}.resume")
