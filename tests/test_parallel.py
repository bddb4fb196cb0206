"""Ray task plumbing: results, progress from inside tasks, retries of transient errors, failures as one line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import ray
from ray import cloudpickle

from raydd.errors import RayddError
from raydd.parallel import run_tasks

pytestmark = pytest.mark.usefixtures("ray_cluster")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import the tests package


def multiply(a: int, b: int) -> int:
    return a * b


def divide(a: int, b: int) -> float:
    return a / b


def die(code: int) -> None:
    os._exit(code)  # the worker process ends without a word, as a killed or OOM'd worker would


def test_results_arrive_for_every_call() -> None:
    results = run_tasks(
        multiply, [(2, 3), (4, 5), (6, 7)], description="mul", weights=[1, 1, 1], unit="call", max_in_flight=2
    )
    assert sorted(results) == [6, 20, 42]


def test_a_worker_that_dies_on_every_retry_is_one_clear_error() -> None:
    with pytest.raises(RayddError, match=r"crash task 0 failed \(.*Error.*re-run the same command"):
        list(run_tasks(die, [(3,)], description="crash", weights=[1], unit="call", max_in_flight=1))


def test_an_exception_in_a_task_names_its_type() -> None:
    with pytest.raises(RayddError, match=r"div task 1 failed \(ZeroDivisionError"):
        list(run_tasks(divide, [(1, 1), (1, 0)], description="div", weights=[1, 1], unit="call", max_in_flight=1))


@ray.remote(num_cpus=0)
class Signal:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    async def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


def count_up(units: int, signal: ray.actor.ActorHandle, progress: Callable[[int], None]) -> int:
    """Report each unit, then end only once the driver has shown every unit of every call (60 s at most)."""
    for done in range(1, units + 1):
        progress(done)
    ray.get(signal.wait.remote(), timeout=60)
    return units


def test_progress_reported_inside_tasks_reaches_the_bar_before_they_end() -> None:
    signal, seen = Signal.remote(), []

    def on_progress(units: int) -> None:
        seen.append(units)
        if units == 12:  # no task has ended yet: only their own reports can say so
            signal.set.remote()

    calls = [(5, signal), (7, signal)]
    results = run_tasks(
        count_up,
        calls,
        description="count",
        weights=[5, 7],
        unit="unit",
        max_in_flight=2,
        reports_progress=True,
        on_progress=on_progress,
    )
    assert sorted(results) == [5, 7]
    assert seen[-1] == 12 and seen == sorted(seen)


def flaky(folder: str, error: str) -> str:
    """Fails on its first attempt (leaving a marker) with ``error``; later attempts return normally."""
    attempt = len(os.listdir(folder)) + 1
    Path(folder, f"attempt-{attempt}").touch()
    if attempt == 1:
        raise ConnectionResetError("connection reset by peer") if error == "oserror" else RayddError("bad input")
    return f"attempt {attempt}"


def always_unavailable(folder: str) -> None:
    Path(folder, f"attempt-{len(os.listdir(folder)) + 1}").touch()
    raise TimeoutError("read timed out")


def test_a_transient_storage_error_in_a_task_is_retried(tmp_path: Path) -> None:
    results = run_tasks(flaky, [(str(tmp_path), "oserror")], description="f", weights=[1], unit="call", max_in_flight=1)
    assert list(results) == ["attempt 2"]


def test_a_user_error_in_a_task_is_not_retried(tmp_path: Path) -> None:
    with pytest.raises(RayddError, match="^bad input$"):
        list(run_tasks(flaky, [(str(tmp_path), "user")], description="user", weights=[1], unit="call", max_in_flight=1))
    assert os.listdir(tmp_path) == ["attempt-1"]


def test_a_storage_error_that_persists_fails_after_the_retries_in_one_line(tmp_path: Path) -> None:
    calls = [(str(tmp_path),)]
    with pytest.raises(RayddError, match=r"^down task 0 failed \(TimeoutError: read timed out\): re-run"):
        list(run_tasks(always_unavailable, calls, description="down", weights=[1], unit="c", max_in_flight=1))
    assert sorted(os.listdir(tmp_path)) == ["attempt-1", "attempt-2", "attempt-3"]
