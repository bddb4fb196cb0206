"""Ray plumbing shared by the commands: joining a cluster and running tasks with a progress bar.

Components never import Ray; entry modules use this to fan their pure functions out as tasks. A task
that fails on a transient storage error (see :func:`raydd.storage.transient_storage_errors`) is run
again; that is safe because every write is atomic and named by what it holds, so a retried task
either finds its output complete or writes it whole.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import ray
from tqdm import tqdm

from raydd import faults
from raydd.cluster import ray_address
from raydd.console import ProgressLines, is_terminal
from raydd.errors import RayddError
from raydd.ports import free_port
from raydd.reaper import start_reaper
from raydd.storage import transient_storage_errors

R = TypeVar("R")
MAX_RETRIES = 2  # a task runs at most 3 times: worker deaths and transient storage errors
PROGRESS_POLL_S = 0.5  # how often the bar asks running tasks how far they are


def ensure_ray(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (or ``RAY_ADDRESS``), or start a local one; reuse a running session.

    A local cluster gets a reaper (:mod:`raydd.reaper`): none of its processes outlives this one, even killed."""
    if ray.is_initialized():
        return
    address = ray_address(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=True, configure_logging=False)
        else:
            start_reaper()
            start_local_ray(configure_logging=False)
    except ConnectionError as error:
        raise RayddError(
            f"cannot join the Ray cluster at {address} ({error}): start it with `ray start --head` or drop "
            "--ray-address"
        ) from None


API_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"


def start_local_ray(**init_options: Any) -> None:
    """``ray.init(**init_options)`` for a new local cluster whose processes ask their own cluster's State API.

    Ray Train's ``PlacementGroupCleaner`` asks the State API every second whether the run's controller is alive,
    and removes the run's placement group, killing its workers, when told the controller does not exist. Given no
    address, the State API looks for Ray's GCS processes on the machine. With two local clusters it cannot choose
    (a ConnectionError, which ends the cleaner's watch). With one, it reads the dashboard's address from that GCS,
    and a cluster started without the dashboard's HTTP server still records the default port 8265 there, which
    another cluster's dashboard may hold: the cleaner then asks the other cluster, hears "no such actor" and kills
    the run (Ray 2.60; it happened in the acceptance run when a second local cluster started and stopped).

    Here the dashboard gets a fixed free port, and the cluster's processes get its address in
    ``RAY_API_SERVER_ADDRESS``, which the State API reads before anything else: each cluster asks itself (without
    the HTTP server nothing answers, which the cleaner only logs). The variable is set in this process only while
    the cluster starts (its processes inherit it then): left set, it would override the address of every later
    job-submission client in this process."""
    port = free_port()
    saved = os.environ.get(API_SERVER_VARIABLE)
    os.environ[API_SERVER_VARIABLE] = f"http://127.0.0.1:{port}"
    try:
        ray.init(dashboard_host="127.0.0.1", dashboard_port=port, **init_options)
    finally:
        if saved is None:
            del os.environ[API_SERVER_VARIABLE]
        else:
            os.environ[API_SERVER_VARIABLE] = saved


@ray.remote(num_cpus=0)
class _ProgressBoard:
    """Units each running call has reported done (the most it reported: a retried call counts from 0 again).

    Placed on the driver's node (:func:`_on_this_node`): anywhere else, losing that node would lose the board and,
    with it, the command, though the tasks themselves are retried elsewhere."""

    def __init__(self) -> None:
        self._done: dict[int, int] = {}

    def report(self, position: int, done: int) -> None:
        if done > self._done.get(position, 0):
            self._done[position] = done

    def snapshot(self) -> dict[int, int]:
        return self._done


def _on_this_node() -> Any:
    """A scheduling strategy that keeps an actor on the node of the process that creates it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def _call_reporting(function: Callable[..., R], board: ray.actor.ActorHandle, position: int, *args: Any) -> R:
    """Run ``function(*args)`` handing it a ``progress(done)`` callable that posts to ``board``."""

    def progress(done: int) -> None:
        board.report.remote(position, done)  # fire and forget: the bar is best effort

    return function(*args, progress=progress)


def run_tasks(
    function: Callable[..., R],
    calls: Sequence[tuple[Any, ...]],
    *,
    description: str,
    weights: Sequence[int],
    unit: str,
    max_in_flight: int,
    num_cpus: float = 1,
    num_gpus: float = 0,
    reports_progress: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[R]:
    """Run ``function(*args)`` for every ``args`` in ``calls`` as Ray tasks, yielding results as they finish.

    At most ``max_in_flight`` tasks run at once; the progress bar advances by ``weights[i]`` ``unit``
    when call ``i`` finishes. With ``reports_progress`` the function also takes a ``progress`` keyword,
    a callable it calls with how many of its ``weights[i]`` units it has done so far, and the bar moves
    as those arrive (a shard's clips one by one, not the whole shard at its end). ``on_progress``, on
    the driver, is called with the units done so far each time that number grows.

    A task that raises a transient storage error is retried, as is one whose worker died, up to
    :data:`MAX_RETRIES` times; any other error (a :class:`RayddError`, bad input) is not. A failing
    task stops the run with one line; tasks already running finish on their own (their writes are
    atomic, so a re-run can reuse them).
    """
    retry_on = list(transient_storage_errors())
    options = dict(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=MAX_RETRIES, retry_exceptions=retry_on)
    if env_vars := faults.environment():  # only then: a runtime environment of its own starts fresh workers
        options["runtime_env"] = {"env_vars": env_vars}
    board = _ProgressBoard.options(scheduling_strategy=_on_this_node()).remote() if reports_progress else None
    if board is None:
        remote = ray.remote(**options)(function)
    else:
        remote = ray.remote(**options)(_call_reporting).options(name=getattr(function, "__name__", "task"))
    pending: dict[ray.ObjectRef, int] = {}
    queue = list(range(len(calls)))
    finished_units = shown_units = 0
    try:
        with _progress(sum(weights), description, unit) as bar:
            while queue or pending:
                while queue and len(pending) < max_in_flight:
                    position = queue.pop(0)
                    args = calls[position] if board is None else (function, board, position, *calls[position])
                    pending[remote.remote(*args)] = position
                done, _ = ray.wait(list(pending), num_returns=1, timeout=None if board is None else PROGRESS_POLL_S)
                if done:
                    position = pending.pop(done[0])
                    result = _result(done[0], position, pending, description)
                    finished_units += weights[position]
                units = finished_units
                if board is not None:
                    running = set(pending.values())
                    reported = ray.get(board.snapshot.remote())
                    units += sum(min(count, weights[p]) for p, count in reported.items() if p in running)
                if units > shown_units or done:
                    _advance(bar, units - shown_units, task_ended=bool(done))
                    grew, shown_units = units > shown_units, units
                    if grew and on_progress is not None:
                        on_progress(units)
                if done:
                    yield result
    finally:
        if board is not None:
            ray.kill(board)


@contextlib.contextmanager
def _progress(total: int, description: str, unit: str) -> Iterator[tqdm | ProgressLines]:
    """tqdm's bar on a terminal; on a file or a pipe, a line a task (:class:`~raydd.console.ProgressLines`)."""
    if is_terminal():
        with tqdm(total=total, desc=description, unit=unit, file=sys.stderr, mininterval=0.5) as bar:
            yield bar
    else:
        yield ProgressLines(total, description, unit)


def _advance(bar: tqdm | ProgressLines, units: int, *, task_ended: bool) -> None:
    if isinstance(bar, ProgressLines):
        bar.update(units, task_ended=task_ended)
    elif units:
        bar.update(units)


def _result(ref: ray.ObjectRef, position: int, pending: dict[ray.ObjectRef, int], description: str) -> Any:
    """The task's result, or its failure (after Ray's retries) as one :class:`RayddError` line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as error:  # an exception in the task, or its worker died every retry
        _drain(pending)
        cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else error
        if isinstance(cause, RayddError):
            raise RayddError(str(cause)) from None
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        raise RayddError(
            f"{description} task {position} failed ({type(cause).__name__}: {reason}): "
            "re-run the same command to resume; finished work is kept"
        ) from None


def _drain(pending: dict[ray.ObjectRef, int]) -> None:
    """Let tasks already running finish (their results stay valid for a re-run) and swallow their errors."""
    for ref in pending:
        try:
            ray.get(ref)
        except ray.exceptions.RayError:
            pass
