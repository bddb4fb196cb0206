"""Pieces of benchmarks/chaos.py: this run's processes found by an environment marker, an S3 outage made by a
TCP forwarder, and the records of two stores compared row by row.

Processes. Other people's Ray clusters and tests run on the same machine, so a process is ours only when its
environment holds ``RAYDD_CHAOS=<run id>:...`` (every command and Ray head the script starts gets it, and
every Ray process those start inherits it). Nothing is ever signalled on its name alone.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from raydd.ports import ports_below_ephemeral
from raydd.reaper import descendants, process_table

MARK_VARIABLE = "RAYDD_CHAOS"


# ---- processes ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Proc:
    pid: int
    title: str  # ``ray::Name`` for Ray workers and agents, else the program and its first arguments
    mark: str


def _title(argv: list[str]) -> str:
    if argv[0].startswith("ray::"):
        return argv[0].strip()
    return " ".join(part.rsplit("/", 1)[-1] for part in argv[:4] if part)[:80]


def marked_processes(prefix: str) -> list[Proc]:
    """Live processes (not zombies) whose ``$RAYDD_CHAOS`` starts with ``prefix``, this process excluded."""
    found = []
    needle = f"{MARK_VARIABLE}={prefix}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
            mark = next((item for item in environ if item.startswith(needle)), None)
            if mark is None:
                continue
            with open(f"/proc/{entry}/stat", "rb") as handle:
                if handle.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().decode(errors="replace").split("\0")
        except (OSError, IndexError):
            continue
        found.append(Proc(int(entry), _title(argv), mark.decode().split("=", 1)[1]))
    return found


class Lineage:
    """Every process descended from the commands and Ray heads this script started, noted every ``interval_s``
    with the mark of the one it descends from. Needed beside the environment marker: Ray's process titles
    overwrite part of ``/proc/PID/environ``, so the marker can be unreadable in a ``ray::`` process."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.roots: dict[int, str] = {}
        self.seen: dict[tuple[int, int], str] = {}  # (pid, start time) -> mark
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, pid: int, mark: str) -> None:
        with self._lock:
            self.roots[pid] = mark
        self.note()

    def note(self) -> None:
        table = process_table()
        with self._lock:
            for root, mark in self.roots.items():
                if root in table:
                    self.seen.setdefault((root, table[root][1]), mark)
                for pid, started in descendants(root, table).items():
                    self.seen.setdefault((pid, started), mark)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.note()

    def __enter__(self) -> Lineage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def alive(self, prefix: str) -> list[Proc]:
        table = process_table()
        with self._lock:
            pids = [
                (pid, mark)
                for (pid, t), mark in self.seen.items()
                if mark.startswith(prefix) and table.get(pid, (0, None))[1] == t
            ]
        found = []
        for pid, mark in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    found.append(Proc(pid, _title(handle.read().decode(errors="replace").split("\0")), mark))
            except (OSError, IndexError):
                continue
        return found


def ours(prefix: str, lineage: Lineage | None) -> list[Proc]:
    """This run's live processes under ``prefix``: marked in their environment, or noted descending from ours."""
    found = {p.pid: p for p in marked_processes(prefix)}
    for process in lineage.alive(prefix) if lineage else ():
        found.setdefault(process.pid, process)
    return list(found.values())


def ray_or_raydd(processes: Iterable[Proc]) -> list[Proc]:
    """Those whose command line names Ray or raydd (moto and helper shells are not counted)."""
    return [p for p in processes if "ray" in p.title.lower()]


def kill_all(processes: Iterable[Proc]) -> int:
    """SIGKILL each of ``processes`` (found by marker, so ours); the number signalled."""
    count = 0
    for process in processes:
        try:
            os.kill(process.pid, signal.SIGKILL)
            count += 1
        except ProcessLookupError:
            pass
    return count


class ProcessWatch:
    """Samples this run's processes every ``interval_s``: when each title (a substring) was first and last seen."""

    def __init__(self, prefix: str, kinds: Iterable[str], lineage: Lineage | None, interval_s: float = 0.2) -> None:
        self.prefix, self.kinds, self.lineage, self.interval_s = prefix, tuple(kinds), lineage, interval_s
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            titles = [p.title for p in ours(self.prefix, self.lineage)]
            for kind in self.kinds:
                if any(kind in title for title in titles):
                    self.first.setdefault(kind, now)
                    self.last[kind] = now
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, kind: str) -> float:
        """Seconds between the first and the last sighting of ``kind`` (0 when never seen)."""
        return self.last.get(kind, 0.0) - self.first.get(kind, 0.0)


# ---- an S3 outage ---------------------------------------------------------------------------------------------


class OutageProxy:
    """A TCP forwarder on 127.0.0.1 in front of the S3 server that can play the server going away: once armed, at
    the ``after_writes``-th write request (PUT or POST) it stops listening, resets every open connection (the one
    carrying that write included) and comes back on the same port ``down_s`` seconds later. moto keeps its objects
    in memory, so stopping its process would lose the store; to the clients this is the same outage."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.writes = 0
        self.outages: list[dict[str, float]] = []
        self.back = threading.Event()  # set when an outage ends: the endpoint listens again (or could not)
        self._armed: tuple[int, float] | None = None
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server = self._listen_below_ephemeral()
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(64)
        return server

    @classmethod
    def _listen_below_ephemeral(cls) -> socket.socket:
        """A free port below Linux's ephemeral range (32768 up): while the outage has the port closed, no other
        process's outgoing connection can be given its number (an ephemeral port was, once, under a full suite)."""
        for port in ports_below_ephemeral():
            try:
                return cls._listen(port)
            except OSError:
                continue
        return cls._listen(0)

    def arm(self, after_writes: int, down_s: float) -> None:
        with self._lock:
            self._armed = (self.writes + after_writes, down_s)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                return
            with self._lock:
                self._connections |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if from_client:
                    writes = len(re.findall(rb"(?:^|\r\n)(?:PUT|POST) /", data))
                    if writes and self._count(writes):
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source, sink)

    def _count(self, writes: int) -> bool:
        """Count write requests; True when this one starts the outage (the request is not forwarded)."""
        with self._lock:
            self.writes += writes
            if self._armed is None or self.writes < self._armed[0]:
                return False
            down_s = self._armed[1]
            self._armed = None
        threading.Thread(target=self._outage, args=(down_s,), daemon=True).start()
        return True

    def _outage(self, down_s: float) -> None:
        started = time.monotonic()
        with self._lock:
            server, self._server = self._server, None
            connections, self._connections = set(self._connections), set()
        if server is not None:
            self._stop_listening(server)
        for connection in connections:
            self._reset(connection)
        time.sleep(down_s)  # the outage itself
        try:
            server = self._listen_again()
            with self._lock:
                if self._closed:
                    server.close()
                    return
                self._server = server
                threading.Thread(target=self._accept, args=(server,), daemon=True).start()
            self.outages.append({"at_write": self.writes, "down_s": time.monotonic() - started})
        finally:
            self.back.set()

    def _listen_again(self) -> socket.socket:
        """Listen on the same port again. On a busy machine another process's outgoing connection may hold the
        port number for a moment, so a failed bind is retried for up to 10 s before the outage is given up."""
        deadline = time.monotonic() + 10
        while True:
            try:
                return self._listen(self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    @staticmethod
    def _stop_listening(server: socket.socket) -> None:
        """Shut the listening socket down before closing it. On Linux, close() alone leaves a socket that another
        thread is blocked in accept() on listening until that accept returns, so the port could not be bound
        again for the outage's end."""
        try:
            server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        server.close()

    @staticmethod
    def _reset(connection: socket.socket) -> None:
        try:  # SO_LINGER 0: close sends RST, as a server that went away does
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            connection.close()
        except OSError:
            pass

    def _drop(self, *ends: socket.socket) -> None:
        with self._lock:
            self._connections -= set(ends)
        for end in ends:
            try:
                end.close()
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._server is not None:
                self._stop_listening(self._server)


# ---- comparing outputs ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Comparison:
    records: int = 0  # rows of the reference: clips, trajectory epochs, synthetic instances
    lost: int = 0  # missing, unreadable or differing beyond the tolerance
    bitwise: int = 0  # rows identical to the bit
    max_abs_diff: float = 0.0  # over float columns of rows compared
    lost_by_folder: dict[str, int] = dataclasses.field(default_factory=dict)


def batch_rows(data: bytes) -> list[list[Any]]:
    """Every row of every record batch of an Arrow IPC file, as column values (numeric columns as numpy)."""
    reader = pa.ipc.open_file(pa.py_buffer(data))
    rows: list[list[Any]] = []
    for index in range(reader.num_record_batches):
        batch = reader.get_batch(index)
        columns = []
        for column in batch.columns:
            storage = column.storage if isinstance(column, pa.ExtensionArray) else column
            if pa.types.is_fixed_size_list(storage.type) or pa.types.is_list(storage.type):
                flat = storage.flatten()
                while pa.types.is_fixed_size_list(flat.type) or pa.types.is_list(flat.type):
                    flat = flat.flatten()
                values = flat.to_numpy(zero_copy_only=False)
                columns.append(values.reshape(len(storage), -1) if len(storage) else values)
            else:
                columns.append(storage.to_pylist())
        rows += [[column[i] for column in columns] for i in range(batch.num_rows)]
    return rows


def rows_differ(reference: list[Any], other: list[Any], rtol: float, atol: float) -> tuple[bool, float]:
    """Whether two rows differ beyond the tolerance (floats) or at all (anything else), and their largest
    absolute float difference."""
    largest = 0.0
    for a, b in zip(reference, other, strict=True):
        if isinstance(a, np.ndarray):
            if a.shape != b.shape or a.dtype != b.dtype:
                return True, float("inf")
            if a.dtype.kind == "f":
                if not np.array_equal(a, b):
                    diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                    largest = max(largest, diff)
                    if not np.allclose(b, a, rtol=rtol, atol=atol):
                        return True, largest
            elif not np.array_equal(a, b):
                return True, largest
        elif a != b:
            return True, largest
    return False, largest


def compare_rows(
    reference: dict[str, list[list[Any]]], other: dict[str, list[list[Any]] | None], rtol: float, atol: float
) -> Comparison:
    """Compare files' rows (by file key; ``None``: the file is missing or unreadable in ``other``)."""
    result = Comparison()
    for key, rows in reference.items():
        theirs = other.get(key)
        folder = key.rsplit("/", 1)[0]
        for index, row in enumerate(rows):
            result.records += 1
            if theirs is None or index >= len(theirs):
                lost = True
            else:
                lost, diff = rows_differ(row, theirs[index], rtol, atol)
                result.max_abs_diff = max(result.max_abs_diff, diff if diff != float("inf") else 0.0)
                result.bitwise += not lost and diff == 0.0
            if lost:
                result.lost += 1
                result.lost_by_folder[folder] = result.lost_by_folder.get(folder, 0) + 1
    return result
