"""DC (gradient matching) without Ray: a class whose synthetic instances are its real batch sits at the
distance's floor, a class's term sends gradient to that class's rows only, and a few iterations lower the
matching loss measured on fixed matching samples."""

from __future__ import annotations

import pytest
import torch

from raydd.data.reader import open_prepared
from raydd.distill.loop import SingleProcess, sample_seed
from raydd.distill.methods.base import MatchingSample, fresh_network
from raydd.distill.methods.dc import GradientMatching, gradient_distance, matched_parameters
from raydd.distill.presets import Preset
from raydd.distill.real import RealData
from raydd.distill.share import Share
from raydd.distill.stages import StageSpec, build_stage, matching_network
from raydd.distill.synthetic import FreeTensors

from .tiny_store import CLASSES, CLIP_SHAPE, write_builtin

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dataset_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_builtin(str(tmp_path_factory.mktemp("store")))


class _OneClass:
    """Worker ``rank`` of ``CLASSES`` in a class split: its share is class ``rank`` alone (DC reduces nothing)."""

    def __init__(self, rank: int) -> None:
        self.rank, self.world_size = rank, CLASSES


def test_a_class_matched_by_its_real_batch_sits_at_the_floor_and_only_its_rows_get_gradient(dataset_uri: str) -> None:
    real = RealData(open_prepared(dataset_uri).split("train"), *_stats(dataset_uri), CPU, frames=False)
    n = len(real.class_indices[0])  # batch_real = the whole class: the real batch is every clip of class 0
    item = (3, *CLIP_SHAPE[:3])
    initial = torch.randn((CLASSES * n, *item), generator=torch.Generator().manual_seed(1))
    initial[:n] = real.load(real.draw_per_class(n, torch.Generator().manual_seed(0)).part(0, n))  # in another order
    spec = StageSpec(stage="naive", method="dc", dataset_uri=dataset_uri, ipc=n, preset=Preset(network_width=8))
    dc = GradientMatching(matching_network(spec, CLASSES, CLIP_SHAPE), batch_real=n)

    def term(c: int, synthetic: FreeTensors) -> tuple[float, torch.Tensor]:
        sample = MatchingSample(torch.Generator().manual_seed(5), 5, real, CPU, Share(_OneClass(c), CLASSES))
        synthetic.values.grad = None
        loss = dc.accumulate(synthetic, sample, 1.0).item()
        return loss, synthetic.values.grad.view(CLASSES, n, -1).norm(dim=2).norm(dim=1)

    synthetic = FreeTensors(CLASSES, n, item, initial=initial)
    matched, matched_grad = term(0, synthetic)
    noise, noise_grad = term(1, synthetic)
    # The floor: the distance of the real gradient to itself (the reference's 1e-6 guard makes it > 0 for units
    # with tiny gradients).
    net = fresh_network(dc.build_network, 5, CPU)
    drawn = real.draw_per_class(n, torch.Generator().manual_seed(5))
    g_real = dc.real_gradient(net, matched_parameters(net), real.stream(drawn.part(0, n).chunks(dc.real_chunk)), n, 0)
    assert matched == pytest.approx(gradient_distance(g_real, g_real).item(), abs=1e-4)
    assert noise > 3 * matched
    assert matched_grad[1:].eq(0).all() and noise_grad[torch.arange(CLASSES) != 1].eq(0).all()
    assert matched_grad[0] < 0.5 * noise_grad[1]
    nudged = initial.clone()
    nudged[:n] += 0.3 * torch.randn((n, *item), generator=torch.Generator().manual_seed(2))
    assert term(0, FreeTensors(CLASSES, n, item, initial=nudged))[0] > matched + 0.05


def _stats(uri: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    dataset = open_prepared(uri)
    return dataset.mean, dataset.std


def _loss(distiller, seeds: list[int]) -> float:  # noqa: ANN001
    """Mean matching loss over the samples of ``seeds`` (the same networks and real batches every call)."""
    samples = [MatchingSample(torch.Generator().manual_seed(s), s, distiller.real, CPU) for s in seeds]
    losses = [distiller.method.accumulate(distiller.synthetic, sample, 0.0).item() for sample in samples]
    return sum(losses) / len(losses)


@pytest.mark.slow
def test_a_few_iterations_lower_the_matching_loss_on_held_out_samples(dataset_uri: str) -> None:
    """Stage 1: 15 iterations (15 fresh networks) lower the loss under 6 other networks."""
    preset = Preset(iterations=15, lr_static=1.0, momentum=0.5, batch_real=8, network_width=8)
    spec = StageSpec(stage="static", method="dc", dataset_uri=dataset_uri, ipc=1, preset=preset, seed=3)
    distiller = build_stage(spec, SingleProcess(), CPU)
    held_out = [sample_seed(99, "held-out", 0, j) for j in range(6)]
    before = _loss(distiller, held_out)
    for i in range(preset.iterations):
        distiller.step(i)
    assert _loss(distiller, held_out) < 0.98 * before


def test_steps_on_one_sample_lower_its_loss_for_videos(dataset_uri: str) -> None:
    """Naive videos through MiniC3D: the update goes down the matching loss (the gradient's sign and scale)."""
    preset = Preset(iterations=5, lr_img=1.0, momentum=0.0, batch_real=8, network_width=8)
    spec = StageSpec(stage="naive", method="dc", dataset_uri=dataset_uri, ipc=1, preset=preset, seed=3)
    distiller = build_stage(spec, SingleProcess(), CPU)
    seed = sample_seed(3, "naive", 0, 0)  # the sample that iteration 0 runs
    losses = [_loss(distiller, [seed])]
    for _ in range(preset.iterations):
        distiller.step(0)
        losses.append(_loss(distiller, [seed]))
    assert all(after < before for before, after in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.95 * losses[0]
