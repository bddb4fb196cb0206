"""Where a run comes from: raydd's version, the git commit of the code (and whether it had uncommitted changes),
and which driver process holds an MLflow run open (so that a re-run can tell a killed driver's run from a live
one's)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

VERSION = "0.1.0"  # raydd.__version__; pyproject.toml's version
# Set where the job is submitted (the cluster's copy of the code has no .git), e.g.
#   RAYDD_GIT_COMMIT=$(git describe --always --dirty --abbrev=40 --exclude='*')
# which gives the commit, with "-dirty" appended when tracked files have uncommitted changes.
GIT_COMMIT_VARIABLE = "RAYDD_GIT_COMMIT"
DIRTY_SUFFIX = "-dirty"
UNKNOWN = "unknown"


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_commit() -> tuple[str, str]:
    """``(commit, dirty)``: ``$RAYDD_GIT_COMMIT`` when set (the submitter's checkout), else the checkout raydd is
    imported from; dirty is ``true``/``false``, and both are ``unknown`` with neither."""
    given = os.environ.get(GIT_COMMIT_VARIABLE, "").strip()
    if given:
        dirty = given.endswith(DIRTY_SUFFIX)
        return given.removesuffix(DIRTY_SUFFIX), str(dirty).lower()
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return UNKNOWN, UNKNOWN
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return commit, UNKNOWN if changes is None else str(bool(changes)).lower()


def driver_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def driver_alive(driver: str) -> bool:
    """Whether the process ``host:pid`` still runs. A driver on another host cannot be checked: it counts as gone
    (a Ray job's driver runs on the head, so a re-run of it does too)."""
    host, _, pid = driver.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
