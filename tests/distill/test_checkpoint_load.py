"""Checkpoints are unpickled with weights_only=True: what a store holds can never run code on a worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from raydd.distill.ray_train import load_state, read_checkpoint, write_checkpoint_folder
from raydd.errors import RayddError
from raydd.storage import resolve
from tests.data.test_cache import Recording


class _RunsCodeWhenUnpickled:
    def __reduce__(self):  # noqa: ANN204 - the shape of an attack: unpickling calls a function
        return (Path.touch, (Path(self.marker),))

    def __init__(self, marker: str) -> None:
        self.marker = marker


def test_a_state_of_tensors_and_numbers_loads(tmp_path: Path) -> None:
    state = {
        "iteration": 3,
        "synthetic": {"values": torch.ones(2, 3)},
        "history": {"loss": [0.5, 0.25]},
        "saved_at": 1.5,
    }
    torch.save(state, tmp_path / "state.pt")
    loaded = load_state(tmp_path / "state.pt", torch.device("cpu"))
    assert loaded["iteration"] == 3 and loaded["history"]["loss"] == [0.5, 0.25]
    assert torch.equal(loaded["synthetic"]["values"], torch.ones(2, 3))


def test_a_state_that_would_run_code_is_refused_in_one_line_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    torch.save({"iteration": 1, "payload": _RunsCodeWhenUnpickled(str(marker))}, tmp_path / "state.pt")
    with pytest.raises(RayddError) as raised:
        load_state(tmp_path / "state.pt", torch.device("cpu"))
    assert "refused" in str(raised.value) and "\n" not in str(raised.value)
    assert not marker.exists()


def _upload(folder: Path, s3_folder: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"])
    for file in folder.iterdir():
        fs.put_file(str(file), f"{s3_folder.removeprefix('s3://')}/{file.name}")


def test_a_checkpoint_on_s3_is_read_through_the_node_cache_once_and_never_by_the_node_that_wrote_it(
    s3_bucket: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyarrow.fs import FSSpecHandler, PyFileSystem
    from ray.train import Checkpoint

    monkeypatch.setenv("RAYDD_CACHE", str(tmp_path / "writer-cache"))
    state = {"iteration": 4, "synthetic": {"values": torch.arange(12.0).view(3, 4)}, "history": {"loss": [1.0]}}
    written = tmp_path / "written"
    written.mkdir()
    write_checkpoint_folder(written, state, cache=True)
    runs = resolve(f"{s3_bucket}/distill/runs")
    _upload(written, f"{runs.uri}/run/checkpoint_0")
    checkpoint = Checkpoint(path=f"{runs.path}/run/checkpoint_0", filesystem=PyFileSystem(FSSpecHandler(runs.fs)))

    def state_gets() -> int:
        return sum(1 for name, _ in recording.gets() if name == "state.pt")

    with Recording(s3_endpoint) as recording:
        same_node = read_checkpoint(checkpoint, runs, torch.device("cpu"))
    assert state_gets() == 0  # the node that wrote it resumes from its cache
    monkeypatch.setenv("RAYDD_CACHE", str(tmp_path / "other-node-cache"))
    with Recording(s3_endpoint) as recording:
        first = read_checkpoint(checkpoint, runs, torch.device("cpu"))
        again = read_checkpoint(checkpoint, runs, torch.device("cpu"))
    assert state_gets() == 1  # another node fetches it once
    for loaded in (same_node, first, again):
        assert loaded["iteration"] == 4 and torch.equal(loaded["synthetic"]["values"], state["synthetic"]["values"])
