"""Reading prepared shards: torch dataset, DataLoader, Ray Data, and damaged shards."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from raydd.data import open_prepared, ray_dataset
from raydd.data.builtin import generate_clip, parse_builtin_source
from raydd.data.preparation import PrepareConfig, prepare
from raydd.data.shards import read_clip_shard
from raydd.errors import RayddError
from raydd.storage import resolve

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> str:
    store = tmp_path_factory.mktemp("store")
    prepare(PrepareConfig(store=str(store), frames=4, height=16, width=16, shard_mb=0.2))
    return str(store / "datasets" / "builtin")


def test_items_equal_the_generated_clips(prepared: str) -> None:
    dataset = open_prepared(prepared)
    train = dataset.split("train")
    shard = read_clip_shard(dataset.location.child(dataset.manifest.group("train")[1].name))
    label, split, number = parse_builtin_source(shard.sources[5])
    expected = generate_clip(dataset.spec, label, split, number)
    position = dataset.manifest.group("train")[0].rows  # first row of the second shard
    frames, item_label = train[position + 5]
    assert item_label == label
    assert np.array_equal(frames.numpy(), expected)


def test_shard_frames_are_zero_copy_views_of_the_mapped_file(prepared: str) -> None:
    dataset = open_prepared(prepared)
    shard = read_clip_shard(dataset.location.child(dataset.manifest.shards[0].name))
    assert not shard.frames_NTHWC.flags.owndata and not shard.frames_NTHWC.flags.writeable


def test_batch_and_dataloader_agree(prepared: str) -> None:
    train = open_prepared(prepared).split("train")
    indices = [0, 299, 17, 150, 64]
    frames, labels = train.batch(indices)
    assert frames.shape == (5, 4, 16, 16, 3) and frames.dtype == torch.uint8
    for row, index in enumerate(indices):
        single, label = train[index]
        assert torch.equal(frames[row], single) and labels[row] == label
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = torch.cat([batch_labels for _, batch_labels in loader])
    assert torch.equal(seen.sort().values, train.labels.sort().values)
    with pytest.raises(IndexError):
        train.batch([300])


def test_ray_data_reads_the_same_clips(prepared: str) -> None:
    rows = ray_dataset(prepared, "test").take_all()
    assert len(rows) == 200
    test = open_prepared(prepared).split("test")
    assert sorted(int(r["label"]) for r in rows) == sorted(test.labels.tolist())
    assert rows[0]["frames"].shape == (4, 16, 16, 3) and rows[0]["frames"].dtype == np.uint8


def test_truncated_and_corrupt_shards_are_named(tmp_path) -> None:
    prepare(PrepareConfig(store=str(tmp_path), frames=2, height=8, width=8))
    dataset = open_prepared(str(tmp_path / "datasets" / "builtin"))
    shard_path = resolve(str(dataset.location)).child(dataset.manifest.group("test")[0].name).path
    data = open(shard_path, "rb").read()
    with open(shard_path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(RayddError, match="does not match its manifest"):
        dataset.split("test")
    with pytest.raises(RayddError, match="is damaged"):
        read_clip_shard(resolve(shard_path))
    with open(shard_path, "wb") as handle:  # same size, flipped bytes: only a checksum notices
        handle.write(data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:])
    with pytest.raises(RayddError, match="does not match its manifest"):
        dataset.split("test", verify=True)


def test_unprepared_location_names_the_command(tmp_path) -> None:
    with pytest.raises(RayddError, match="python -m raydd.prepare"):
        open_prepared(str(tmp_path / "datasets" / "k400"))


def test_class_rows_are_the_label_arrays_rows(prepared: str) -> None:
    train = open_prepared(prepared).split("train")
    labels = train.labels.numpy()
    for c in range(len(train.dataset.classes)):
        assert np.array_equal(train.class_rows(c), np.flatnonzero(labels == c))
    assert sum(len(rows) for rows in train.rows_by_class) == len(train)
    with pytest.raises(IndexError):
        train.class_rows(len(train.dataset.classes))


def test_a_split_pickles_as_its_location_not_its_frames(prepared: str) -> None:
    train = open_prepared(prepared).split("train")
    data = pickle.dumps(train)
    assert len(data) < 20_000 < train.clip_shape[0] * 16 * 16 * 3 * len(train)
    copy = pickle.loads(data)
    assert torch.equal(copy.batch([3, 7])[0], train.batch([3, 7])[0]) and torch.equal(copy.labels, train.labels)


def test_gather_into_copies_sorted_rows_and_single_frames_across_shards(prepared: str) -> None:
    train = open_prepared(prepared).split("train")
    assert len(open_prepared(prepared).manifest.group("train")) > 1  # the rows below span shards
    rows = np.array([0, 3, 3, 150, 299])
    out = torch.full((8, 4, 16, 16, 3), 7, dtype=torch.uint8)
    gathered = train.gather_into(rows, out)
    assert gathered.data_ptr() == out.data_ptr() and torch.equal(gathered, train.batch(rows)[0])
    assert out[len(rows) :].eq(7).all()  # nothing past the rows is written
    frames = np.array([1, 0, 3, 2, 1])
    one = train.gather_into(rows, torch.empty((5, 1, 16, 16, 3), dtype=torch.uint8), frames)
    assert torch.equal(one[:, 0], train.batch(rows)[0][torch.arange(5), torch.from_numpy(frames)])
    with pytest.raises(ValueError, match="ascending"):
        train.gather_into(np.array([3, 0]), out)
