"""benchmarks/chaos.py's tools: rows compared file by file, our processes found by their marker only, and the S3
outage the forwarder plays."""

from __future__ import annotations

import http.client
import http.server
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.chaos_tools import MARK_VARIABLE, OutageProxy, batch_rows, compare_rows, marked_processes


def _arrow_file(path: Path, values: np.ndarray) -> bytes:
    batch = pa.record_batch(
        [pa.array(range(len(values))), pa.FixedSizeListArray.from_arrays(values.ravel(), 3)], names=["label", "tensor"]
    )
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return path.read_bytes()


def test_rows_lost_are_counted_missing_differing_or_unreadable(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    reference = {"a/x.arrow": batch_rows(_arrow_file(tmp_path / "x", values)), "a/y.arrow": [[0], [1]]}
    nudged = values.copy()
    nudged[1, 0] += 1e-5  # 3.0 -> 3.00001: within the tolerance
    nudged[2, 2] += 0.5  # beyond it
    other = {"a/x.arrow": batch_rows(_arrow_file(tmp_path / "x2", nudged)), "a/y.arrow": None}  # y unreadable
    result = compare_rows(reference, other, rtol=1e-5, atol=1e-7)
    assert (result.records, result.lost, result.bitwise) == (6, 3, 2)
    assert result.lost_by_folder == {"a": 3} and abs(result.max_abs_diff - 0.5) < 1e-6


def test_only_processes_carrying_the_marker_are_found() -> None:
    marked = subprocess.Popen(["sleep", "60"], env={**os.environ, MARK_VARIABLE: "t1:scenario"})
    unmarked = subprocess.Popen(["sleep", "60"])
    try:
        found = {p.pid: p for p in marked_processes("t1:")}
        assert marked.pid in found and unmarked.pid not in found
        assert found[marked.pid].mark == "t1:scenario" and found[marked.pid].title.startswith("sleep")
    finally:
        for process in (marked, unmarked):
            process.kill()
            process.wait()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _put(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("PUT", "/bucket/key", body=b"x" * 100)
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_outage_drops_the_armed_write_and_the_endpoint_comes_back() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = OutageProxy(server.server_address[1])
    try:
        assert _put(proxy.port) == 200
        proxy.arm(after_writes=2, down_s=0.5)
        assert _put(proxy.port) == 200  # the first write after arming goes through
        try:
            _put(proxy.port)
            dropped = False
        except (ConnectionError, http.client.HTTPException, OSError):
            dropped = True
        assert dropped, "the armed write went through"
        assert proxy.back.wait(timeout=60), "the endpoint did not come back within 60 s"
        assert proxy.outages, "the endpoint could not listen on its port again"
        assert proxy.outages[0]["down_s"] >= 0.5
        assert _put(proxy.port) == 200 and proxy.writes == 4
    finally:
        proxy.close()
        server.shutdown()
