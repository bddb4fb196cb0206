"""A command's local Ray cluster keeps asking its own State API when a second local cluster starts on the machine.

Ray Train's placement-group cleaner asks the State API every second whether the run's controller is alive, and
removes the run's placement group (killing its workers) when told the controller does not exist. Before
:func:`raydd.parallel.start_local_ray`, an actor asked whichever cluster Ray's address lookup found: with two
clusters the lookup failed, and a cluster without the dashboard's web server asked port 8265, which another
cluster's dashboard may hold (and answer "no such actor").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ray_head import wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # two local clusters of its own

ROOT = Path(__file__).resolve().parents[1]

# The first command: its local Ray (as every raydd command starts it), an actor, and -- once the test has started
# a second cluster -- the question Ray Train's cleaner asks, about that actor, asked from inside the cluster.
FIRST = """
import sys, ray
from raydd.parallel import ensure_ray
ensure_ray()

@ray.remote(num_cpus=0)
class Probe:
    def state_of(self, actor_id):
        from ray.util.state import get_actor
        from ray.util.state.exception import RayStateApiException
        try:
            state = get_actor(actor_id, timeout=30)
            return "MISSING" if state is None else state.state
        except RayStateApiException:  # the State API is not serving yet (its dashboard starting): ask again
            return "UNAVAILABLE"
        except Exception as error:  # e.g. ConnectionError: it could not tell which cluster to ask
            return f"ERROR {type(error).__name__}: {error}"

probe = Probe.remote()
print(ray.get_runtime_context().gcs_address, flush=True)
for _ in sys.stdin:  # one answer a line the test writes
    print(ray.get(probe.state_of.remote(probe._actor_id.hex())), flush=True)
"""

# The second command: a plain local Ray with its dashboard (on port 8265 when that is free).
SECOND = """
import sys, ray
ray.init(configure_logging=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.readline()
"""


def _start(code: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_cluster_asks_its_own_state_api_after_a_second_cluster_starts(tmp_path: Path) -> None:
    log = tmp_path / "first.log"
    first = _start(FIRST, log)
    second = None
    try:
        first_address = first.stdout.readline().strip()
        assert first_address, "the first command did not start its cluster"
        second = _start(SECOND, tmp_path / "second.log")
        second_address = second.stdout.readline().strip()
        assert second_address and second_address != first_address, "the second cluster did not start"

        def answer() -> str | None:  # None while the State API is not serving yet
            first.stdin.write("\n")
            first.stdin.flush()
            reply = first.stdout.readline().strip()
            return None if reply == "UNAVAILABLE" else reply

        reply = wait_for(answer, within_s=120, watching=first, what="an answer from the State API", log=log)
        assert reply == "ALIVE", f"the first cluster's State API answered {reply!r} about its own live actor"
    finally:
        if second is not None:
            _stop(second)
        _stop(first)
