"""The reaper of a command's own local Ray cluster: when the command's process ends, however it ends, no process it
started outlives it.

When a command starts a local cluster (no ``--ray-address``), Ray ties the GCS and the raylet to the driver, but
the raylet's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) are the raylet's children: after a SIGKILL
of the driver they try to report the raylet's death to the dead GCS and linger for a minute (Ray's 60 s publish
timeout). :func:`start_reaper` starts this module as a separate process (its own session, so a signal to the
command's process group spares it) that waits for the end of a pipe from the driver, which closes only when the
driver exits (after Ray's own shutdown when it exits normally). Meanwhile it notes, once a second, every
descendant of the driver (pid and start time, so a reused pid is never mistaken for one), and the driver's
environment carries a mark its descendants inherit. At the end it stops what is left of either, but for what the
driver was already running when it started the reaper (handed over as pids and start times): SIGTERM, and SIGKILL
after a grace period. Both ways are needed: a process reparented to init is no longer a descendant, and Ray's process
titles overwrite part of ``/proc/PID/environ``. Nothing is ever found by name, so other Ray clusters
on the machine are never touched. Not a user command; Linux only (``/proc``); elsewhere it is not started.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

MARK_VARIABLE = "RAYDD_LOCAL_RAY"
GRACE_S = 2.0
NOTE_EVERY_S = 1.0
_POLL_S = 0.1
_reapers: list[subprocess.Popen] = []  # kept open for the driver's lifetime: the pipe's end is the signal


def start_reaper() -> str | None:
    """Mark this process's environment (so the local cluster about to start inherits the mark) and start its
    reaper; the mark, or None where there is no ``/proc``."""
    if not Path("/proc/self/stat").exists():
        return None
    mark = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    before = ",".join(f"{pid}:{t}" for pid, t in descendants(os.getpid(), process_table()).items())
    package_root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != MARK_VARIABLE}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    _reapers.append(
        subprocess.Popen(
            [sys.executable, "-m", "raydd.reaper", mark, str(os.getpid()), before],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    )
    os.environ[MARK_VARIABLE] = mark
    return mark


def process_table() -> dict[int, tuple[int, int]]:
    """Every live process (zombies left out): pid -> (parent pid, start time in clock ticks since boot)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 19 and fields[0] != b"Z":
            table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(root: int, table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Descendants of ``root`` in ``table``: pid -> start time."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, queue = {}, list(children.get(root, []))
    while queue:
        pid = queue.pop()
        found[pid] = table[pid][1]
        queue += children.get(pid, [])
    return found


def marked(mark: str) -> dict[int, int]:
    """Live processes whose environment (what is left of it) holds ``RAYDD_LOCAL_RAY=mark``: pid -> start time."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    found = {}
    for pid, (_, started) in process_table().items():
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found[pid] = started
        except OSError:
            continue
    return found


def reap(targets: dict[int, int], grace_s: float = GRACE_S) -> int:
    """SIGTERM each of ``targets`` (pid -> start time) still alive, SIGKILL those left after ``grace_s``; how many
    were signalled."""
    targets = {pid: t for pid, t in targets.items() if pid != os.getpid()}

    def alive() -> list[int]:
        table = process_table()
        return [pid for pid, started in targets.items() if table.get(pid, (0, None))[1] == started]

    found = alive()
    for pid in found:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    for pid in left:
        _signal(pid, signal.SIGKILL)
    return len(found)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    mark, driver = argv[0], int(argv[1])
    before = {(int(pid), int(t)) for pid, t in (item.split(":") for item in filter(None, argv[2].split(",")))}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the command is the command's to handle
    noted: dict[int, int] = {}
    stdin = sys.stdin.fileno()
    while True:  # until end of file: the driver has exited
        noted.update(descendants(driver, process_table()))
        ready, _, _ = select.select([stdin], [], [], NOTE_EVERY_S)
        if ready and not os.read(stdin, 1 << 16):
            break
    # what the driver was running before it started its reaper (and so its local Ray) is not the reaper's
    reap({pid: t for pid, t in {**noted, **marked(mark)}.items() if (pid, t) not in before})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
