"""A command's local Ray cluster dies with the command: the reaper stops every process carrying the command's mark
once the command's process ends (killed or not), and nothing else."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from raydd.reaper import MARK_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
# A stand-in for a command: starts a child, then its reaper, then a marked child in a session of its own (as Ray's
# agents are not in the command's process group), prints both pids and either exits or waits to be killed.
COMMAND = """
import signal, subprocess, sys
from raydd.reaper import start_reaper
early = subprocess.Popen(["sleep", "600"], start_new_session=True)  # started before the local Ray: not the reaper's
start_reaper()
child = subprocess.Popen(["sleep", "600"], start_new_session=True)
print(child.pid, early.pid, flush=True)
if sys.argv[1] == "wait":
    signal.pause()  # until killed
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def _gone_within(pid: int, seconds: float) -> bool:
    """Wait, at most ``seconds``, for ``pid`` to end: its pidfd becomes readable when it does."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], seconds)
        return bool(readable)
    finally:
        os.close(pidfd)


@pytest.mark.parametrize("end", ["killed", "exits"])
def test_marked_processes_do_not_outlive_the_command(end: str) -> None:
    bystander = subprocess.Popen(["sleep", "600"])  # unmarked: never the reaper's
    env = {k: v for k, v in os.environ.items() if k != MARK_VARIABLE}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = subprocess.Popen(
        [sys.executable, "-c", COMMAND, "wait" if end == "killed" else "exit"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child, early = (int(pid) for pid in command.stdout.readline().split())
        if end == "killed":
            command.send_signal(signal.SIGKILL)
        command.wait(timeout=60)
        assert _gone_within(child, 30), "the marked child outlived the command"
        assert bystander.poll() is None, "an unmarked process was signalled"
        assert _alive(early), "a process the command started before its reaper was signalled"
    finally:
        if "early" in locals() and _alive(early):
            os.kill(early, signal.SIGKILL)
        bystander.kill()
        bystander.wait()
        command.kill()
        command.wait()
