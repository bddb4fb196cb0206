"""Real clips for evaluation come through the staged gather distillation uses: the same standardised clips as a
plain gather of the mapped shards, in the asked order (repeats included), through both staging buffers, with no
host read or blocking copy of device data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydd.data.reader import PreparedVideos, Standardiser, open_prepared
from raydd.data.staging import StagedGather
from raydd.evaluation.sources import RealClips
from tests.device_reads import DeviceReads
from tests.distill.tiny_store import write_builtin

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def train(tmp_path_factory: pytest.TempPathFactory) -> tuple[PreparedVideos, tuple, tuple]:
    dataset = open_prepared(write_builtin(str(tmp_path_factory.mktemp("store"))))
    return dataset.split("train"), dataset.mean, dataset.std


def test_real_clips_load_as_a_plain_gather_in_the_asked_order(train: tuple[PreparedVideos, tuple, tuple]) -> None:
    videos, mean, std = train
    subset = np.arange(len(videos))[::2]  # a held-out split's rows: the source's index i is row subset[i]
    clips = RealClips(videos, mean, std, indices=subset)
    standardise = Standardiser(mean, std)
    batches = [torch.tensor([5, 0, 9, 5]), torch.tensor([len(clips) - 1, 3]), torch.tensor([2, 1, 0])]
    with DeviceReads() as reads:
        loaded = [clips.batch(indices, CPU) for indices in batches]  # three batches: each buffer is used again
    assert reads.reads == []
    for indices, (got, labels) in zip(batches, loaded, strict=True):
        frames_NTHWC, expected_labels = videos.batch(subset[indices.numpy()])
        assert torch.equal(got, standardise(frames_NTHWC, CPU)) and torch.equal(labels, expected_labels)


def test_a_staged_frame_is_that_frame_of_its_clip(train: tuple[PreparedVideos, tuple, tuple]) -> None:
    videos = train[0]
    rows, frames = np.array([7, 2, 7, 30]), np.array([1, 0, 3, 2])
    gather = StagedGather(videos, CPU)
    got = gather.send(gather.stage(rows, 0, frames), 0)
    clips, _ = videos.batch(rows)
    assert torch.equal(got, clips[torch.arange(len(rows)), torch.from_numpy(frames)][:, None])
