"""Ray task plumbing: results, and failures turned into one line."""

from __future__ import annotations

import os
import sys

import pytest
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
    results = run_tasks(multiply, [(2, 3), (4, 5), (6, 7)], description="mul", weights=[1, 1, 1], unit="call", max_in_flight=2)
    assert sorted(results) == [6, 20, 42]


def test_a_worker_that_dies_on_every_retry_is_one_clear_error() -> None:
    with pytest.raises(RayddError, match=r"crash task 0 failed \(.*Error.*re-run the same command"):
        list(run_tasks(die, [(3,)], description="crash", weights=[1], unit="call", max_in_flight=1))


def test_an_exception_in_a_task_names_its_type() -> None:
    with pytest.raises(RayddError, match=r"div task 1 failed \(ZeroDivisionError"):
        list(run_tasks(divide, [(1, 1), (1, 0)], description="div", weights=[1, 1], unit="call", max_in_flight=1))
