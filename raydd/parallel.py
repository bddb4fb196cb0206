"""Ray plumbing shared by the commands: joining a cluster and running tasks with a progress bar.

Components never import Ray; entry modules use this to fan their pure functions out as tasks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import ray
from tqdm import tqdm

from raydd.errors import RayddError

R = TypeVar("R")


def ensure_ray(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (or ``RAY_ADDRESS``), or start a local one; reuse a running session."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=address, log_to_driver=True, configure_logging=False) if address else ray.init(configure_logging=False)
    except ConnectionError as error:
        raise RayddError(f"cannot join the Ray cluster at {address} ({error}): start it with `ray start --head` or drop --ray-address") from None


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


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
) -> Iterator[R]:
    """Run ``function(*args)`` for every ``args`` in ``calls`` as Ray tasks, yielding results as they finish.

    At most ``max_in_flight`` tasks run at once; the progress bar advances by ``weights[i]`` ``unit``
    when call ``i`` finishes. A failing task stops the run with one line; tasks already running finish
    on their own (their writes are atomic, so a re-run can reuse them).
    """
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=2)(function)
    pending: dict[ray.ObjectRef, int] = {}
    queue = list(range(len(calls)))
    with tqdm(total=sum(weights), desc=description, unit=unit, file=sys.stderr, mininterval=0.5) as bar:
        while queue or pending:
            while queue and len(pending) < max_in_flight:
                position = queue.pop(0)
                pending[remote.remote(*calls[position])] = position
            done, _ = ray.wait(list(pending), num_returns=1)
            position = pending.pop(done[0])
            try:
                result = ray.get(done[0])
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
            bar.update(weights[position])
            yield result


def _drain(pending: dict[ray.ObjectRef, int]) -> None:
    """Let tasks already running finish (their results stay valid for a re-run) and swallow their errors."""
    for ref in pending:
        try:
            ray.get(ref)
        except ray.exceptions.RayError:
            pass
