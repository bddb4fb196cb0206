"""Trajectory shards: one record batch per epoch, float32 and bfloat16, unflattening, damage, S3 ranged reads."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest
import torch

from raydd.errors import RayddError
from raydd.experts import ModelSpec, Trajectory, load_parameters, open_trajectory, read_epoch, unflatten_parameters
from raydd.experts.parameters import flatten_parameters
from raydd.experts.trajectories import shard_name, write_trajectory
from raydd.storage import atomic_writer, resolve, size

CLIP = (4, 16, 16, 3)


def _spec(width: int = 8) -> ModelSpec:
    return ModelSpec.of("minic3d", num_classes=10, clip_shape=CLIP, options={"widths": [width // 2, width, width]})


def _write(folder: str, spec: ModelSpec, epochs: list[torch.Tensor], dtype: str = "float32", expert: int = 0) -> str:
    location = resolve(folder).child(shard_name(expert))
    with atomic_writer(location) as handle:
        write_trajectory(handle, spec, epochs, dtype=dtype, metadata={"expert": expert, "seed": 7 + expert})
    return location.uri


def _random_epochs(spec: ModelSpec, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(spec.num_params, generator=generator) for _ in range(count)]


def test_every_epoch_is_its_own_record_batch_and_reads_back_exactly(tmp_path) -> None:
    spec = _spec()
    epochs = _random_epochs(spec, 4)  # a 3-epoch trajectory: initial parameters + 3
    path = _write(str(tmp_path), spec, epochs)
    reader = pa.ipc.open_file(pa.memory_map(path))
    assert reader.num_record_batches == 4 and all(reader.get_batch(t).num_rows == 1 for t in range(4))
    assert reader.schema.field("params").type == pa.list_(pa.float32(), spec.num_params)
    with Trajectory(path) as trajectory:
        assert trajectory.num_epochs == 3 and trajectory.dtype == "float32"
        assert trajectory.spec == spec and trajectory.metadata["seed"] == 7
        assert trajectory.bytes_read is None  # memory-mapped, nothing fetched
        for t in (2, 0, 3, 1):
            assert torch.equal(trajectory.epoch(t), epochs[t])
        trajectory.epoch(1).add_(1)  # a private copy, not the read-only mapped file
        with pytest.raises(RayddError, match=r"epochs 0\.\.3, not 4"):
            trajectory.epoch(4)
    assert torch.equal(read_epoch(str(tmp_path), 0, 2), epochs[2])


def test_bfloat16_halves_the_shard_and_rounds_like_torch(tmp_path) -> None:
    spec = _spec(width=16)
    epochs = _random_epochs(spec, 3)
    full = size(resolve(_write(str(tmp_path / "f32"), spec, epochs)))
    half = size(resolve(_write(str(tmp_path / "bf16"), spec, epochs, dtype="bfloat16")))
    assert half < 0.51 * full
    with open_trajectory(str(tmp_path / "bf16"), 0) as trajectory:
        assert trajectory.dtype == "bfloat16"
        assert torch.equal(trajectory.epoch(2), epochs[2].to(torch.bfloat16).float())


def test_a_vector_unflattens_into_the_model_by_name_and_shape() -> None:
    spec = _spec()
    torch.manual_seed(3)
    source = spec.build()
    vector = flatten_parameters(source)
    assert vector.shape == (spec.num_params,) == (sum(p.numel() for p in source.parameters()),)
    named = unflatten_parameters(vector, spec)
    assert list(named) == [name for name, _ in source.named_parameters()]
    assert all(torch.equal(named[name], value) for name, value in source.named_parameters())
    target = spec.build()
    load_parameters(target, vector, spec)
    videos = torch.randn(2, 3, *CLIP[:3])
    assert torch.equal(target(videos), source(videos))
    with pytest.raises(RayddError, match="does not fit minic3d"):
        unflatten_parameters(vector[:-1], spec)


def test_a_truncated_shard_is_named_with_the_fix(tmp_path) -> None:
    spec = _spec()
    path = _write(str(tmp_path), spec, _random_epochs(spec, 3), expert=5)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    with pytest.raises(
        RayddError,
        match=r"trajectory shard .*expert-00005\.arrow is damaged .*delete it and re-run `python -m raydd\.experts`",
    ):
        read_epoch(str(tmp_path), 5, 0)


def test_other_arrow_files_and_missing_shards_are_refused(tmp_path) -> None:
    table = pa.table({"x": [1, 2]})
    with pa.ipc.new_file(str(tmp_path / shard_name(0)), table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(RayddError, match="not a raydd trajectory shard"):
        open_trajectory(str(tmp_path), 0)
    with pytest.raises(
        RayddError, match=r"no trajectory shard at .*expert-00009\.arrow: train it with `python -m raydd\.experts`"
    ):
        read_epoch(str(tmp_path), 9, 0)


def test_s3_fetches_one_epoch_with_ranged_reads(s3_bucket: str) -> None:
    spec = _spec(width=16)
    epochs = _random_epochs(spec, 6)
    folder = f"{s3_bucket}/experts/builtin/minic3d"
    uri = _write(folder, spec, epochs, expert=2)
    total, epoch_bytes = size(resolve(uri)), 4 * spec.num_params
    with open_trajectory(folder, 2) as trajectory:
        opened = trajectory.bytes_read
        assert 0 < opened < epoch_bytes / 10  # the footer, not the file
        assert torch.equal(trajectory.epoch(4), epochs[4])
        assert trajectory.bytes_read - opened < 1.1 * epoch_bytes < total / 5
        assert torch.equal(trajectory.epoch(0), epochs[0])
    assert torch.equal(read_epoch(folder, 2, 5), epochs[5])
