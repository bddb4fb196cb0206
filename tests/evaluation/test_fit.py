"""The one supervised loop (raydd.evaluation.fit) trains bit for bit as the two loops it replaced did: a plain
SGD epoch loop written out here (evaluation's, with the protocol's lr cut; experts', recording parameters)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from raydd.errors import RayddError
from raydd.evaluation.fit import frame_picker
from raydd.evaluation.protocols import PROTOCOL, Protocol
from raydd.evaluation.sources import TensorClips
from raydd.evaluation.train import TrainSettings, train_and_test
from raydd.experts.trainer import ExpertSettings, model_options, train_expert
from raydd.experts.trajectories import ModelSpec, flatten_parameters
from raydd.models.registry import build_model
from tests.device_reads import DeviceReads

SHAPE = (4, 16, 16, 3)
CPU = torch.device("cpu")


def _clips(count: int, seed: int) -> TensorClips:
    generator = torch.Generator().manual_seed(seed)
    return TensorClips(torch.randn(count, 3, 4, 16, 16, generator=generator), torch.arange(4).repeat(count // 4))


def _plain_loop(model, train, epochs, batch_size, seed, to_input, optimizer_at) -> tuple[list[float], list]:
    """The loop as both jobs wrote it before: shuffle with the seeded generator, step per batch."""
    generator = torch.Generator().manual_seed(seed)
    losses, vectors = [], [flatten_parameters(model)]
    for epoch in range(epochs):
        optimizer = optimizer_at(epoch)
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), batch_size):
            videos, labels = train.batch(order[start : start + batch_size], CPU)
            loss = F.cross_entropy(model(to_input(videos)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(labels), seen + len(labels)
        losses.append(total / seen)
        vectors.append(flatten_parameters(model))
    return losses, vectors


@pytest.mark.parametrize("model_name", ["minic3d", "convnet"])
@pytest.mark.parametrize("restandardised", [False, True])
def test_evaluation_trains_as_the_plain_loop(model_name: str, restandardised: bool) -> None:
    """raydd's protocol, and the same without re-standardisation, average head, its passes and cut (the parts of it
    that change the training loop)."""
    plain = dataclasses.replace(
        PROTOCOL, restandardise_batches=False, head="average", extra_pass=False, fresh_optimizer_at_cut=False
    )
    protocol: Protocol = PROTOCOL if restandardised else plain
    settings = TrainSettings(model=model_name, epochs=3, lr=0.01, batch_size=16, seed=3)
    train = _clips(40, 0)
    result = train_and_test(
        settings, train, _clips(8, 1), num_classes=4, clip_shape=SHAPE, device=CPU, protocol=protocol
    )

    torch.manual_seed(settings.seed)
    head = {"head": protocol.head} if model_name == "minic3d" else {}
    model = build_model(model_name, num_classes=4, clip_shape=SHAPE, **head)
    picker, cut = frame_picker(model_name), protocol.cut_at(settings.epochs)
    state = {"optimizer": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)}

    def optimizer_at(epoch: int) -> torch.optim.Optimizer:
        if epoch == cut and protocol.fresh_optimizer_at_cut:
            state["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
        elif epoch == cut:
            state["optimizer"].param_groups[0]["lr"] = 0.001
        return state["optimizer"]

    to_input = lambda videos: protocol.prepare(picker(videos, True))  # noqa: E731
    losses, _ = _plain_loop(model, train, protocol.passes(settings.epochs), 16, settings.seed, to_input, optimizer_at)
    assert list(result.losses) == losses and len(losses) == protocol.passes(settings.epochs)


@pytest.mark.parametrize("model_name", ["minic3d", "convnet"])
def test_an_expert_trajectory_is_the_plain_loops_parameters_epoch_by_epoch(model_name: str) -> None:
    spec = ModelSpec.of(model_name, num_classes=4, clip_shape=SHAPE, options=model_options(model_name, 8))
    settings = ExpertSettings(spec, "sha", 3, 0.01, 0.0, 0.0, 16, "float32", 0)
    train = _clips(40, 0)
    torch.manual_seed(5)
    model, recorded = spec.build(), []
    train_expert(model, train, settings, seed=5, device=CPU, on_epoch=lambda t, v: recorded.append((t, v.clone())))

    torch.manual_seed(5)
    plain = spec.build()
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.0, weight_decay=0.0)
    picker = frame_picker(model_name)
    _, vectors = _plain_loop(plain, train, 3, 16, 5, lambda videos: picker(videos, True), lambda epoch: optimizer)
    assert [t for t, _ in recorded] == [0, 1, 2, 3]
    assert all(torch.equal(mine, theirs) for (_, mine), theirs in zip(recorded, vectors, strict=True))


def test_a_diverging_expert_names_its_epoch() -> None:
    spec = ModelSpec.of("convnet", num_classes=4, clip_shape=SHAPE, options=model_options("convnet", 8))
    settings = ExpertSettings(spec, "sha", 3, 1e12, 0.0, 0.0, 16, "float32", 0)
    with pytest.raises(RayddError, match=r"non-finite training loss at epoch \d of expert 2 \(lr 1e\+12\): lower"):
        train_expert(spec.build(), _clips(40, 0), settings, seed=0, device=CPU, on_epoch=lambda t, v: None, expert=2)


def test_a_distilled_set_goes_to_the_device_once_and_is_gathered_there() -> None:
    clips = _clips(8, 0)
    for indices in (torch.tensor([3, 0, 5]), torch.tensor([7, 7, 1])):
        videos, labels = clips.batch(indices, torch.device("cpu"))
        assert torch.equal(videos, clips.videos[indices]) and torch.equal(labels, clips.labels[indices])
    assert list(clips._on) == [torch.device("cpu")]  # one copy per device, made on the first batch


def test_training_reads_the_device_once_an_epoch_and_scoring_once() -> None:
    # Three training batches an epoch and two test batches: a read per batch would show as more reads.
    protocol = dataclasses.replace(PROTOCOL, test_batch_size=4)
    settings = TrainSettings(model="convnet", epochs=2, lr=0.01, batch_size=16, seed=3)
    train, test = _clips(40, 0), _clips(8, 1)
    with DeviceReads() as reads:
        train_and_test(settings, train, test, num_classes=4, clip_shape=SHAPE, device=CPU, protocol=protocol)
    assert reads.reads == ["tolist"] * protocol.passes(settings.epochs) + ["to"]


def test_a_diverging_evaluation_names_its_epoch() -> None:
    settings = TrainSettings(model="convnet", epochs=2, lr=1e12, batch_size=16, seed=3)
    with pytest.raises(RayddError, match=r"non-finite training loss at epoch 1 of run 4 \(lr 1e\+12\): lower --lr"):
        train_and_test(settings, _clips(40, 0), _clips(8, 1), num_classes=4, clip_shape=SHAPE, device=CPU, run=4)
