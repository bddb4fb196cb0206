"""FRePo on a tiny prepared dataset: the regression, where gradients go, determinism, resume, pool restarts."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from raydd.data import open_prepared
from raydd.data.ingest import assemble_manifest, plan_shards, write_shard
from raydd.data.layouts import index_source
from raydd.devices import pick_device
from raydd.distill.methods.base import MatchingSample, fresh_network
from raydd.distill.methods.frepo import FeatureRegression, feature_regression
from raydd.distill.real import RealData
from raydd.distill.synthetic import FreeTensors, StaticDynamic, SyntheticSet
from raydd.models.convnet import ConvNet
from raydd.models.hallucinator import Hallucinator
from raydd.models.minic3d import MiniC3D
from raydd.prepare import PrepareConfig
from raydd.storage import resolve, write_manifest

CLASSES, FRAMES, SIDE = 10, 4, 16
DEVICE = pick_device("cpu")
build_convnet = functools.partial(ConvNet, num_classes=CLASSES, height=SIDE, width=SIDE, depth=2, net_width=16)
build_minic3d = functools.partial(
    MiniC3D, num_classes=CLASSES, frames=FRAMES, height=SIDE, width=SIDE, widths=(8, 8, 8)
)


@pytest.fixture(scope="module")
def dataset_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The builtin dataset written in this process: the shard writers that ``prepare`` runs on Ray."""
    store = tmp_path_factory.mktemp("store")
    spec = PrepareConfig(store=str(store), frames=FRAMES, height=SIDE, width=SIDE).spec()
    target = resolve(str(store)).child("datasets", spec.name)
    index = index_source(spec, None)
    results = [
        write_shard(spec, plan, target.uri, None, len(index.classes)) for plan in plan_shards(spec, index, 256.0)
    ]
    write_manifest(target, assemble_manifest(spec, index, results, 0.0))
    return target.uri


def _real(uri: str, *, frames: bool) -> RealData:
    dataset = open_prepared(uri)
    return RealData(dataset.split("train"), dataset.mean, dataset.std, DEVICE, frames=frames)


def _sample(real: RealData, seed: int) -> MatchingSample:
    return MatchingSample(torch.Generator().manual_seed(seed), seed, real, DEVICE)


def _images(seed: int = 0) -> FreeTensors:
    return FreeTensors(
        CLASSES,
        2,
        (3, SIDE, SIDE),
        initial=torch.randn(CLASSES * 2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed)),
    )


def _videos() -> StaticDynamic:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return StaticDynamic(
            torch.randn(CLASSES, 3, SIDE, SIDE),
            num_classes=CLASSES,
            dpc=2,
            dynamic_shape=(1, 2, 8, 8),
            hallucinator=Hallucinator(frames=FRAMES),
        )


def _run(method: FeatureRegression, synthetic: SyntheticSet, real: RealData, iterations: range) -> list[float]:
    """The distillation loop in miniature: one sample per iteration, an SGD step, the pool's step."""
    optimizer = torch.optim.SGD(synthetic.parameters(), lr=0.1)
    losses = []
    for iteration in iterations:
        optimizer.zero_grad(set_to_none=True)
        losses.append(method.accumulate(synthetic, _sample(real, 1000 + iteration), 1.0).item())
        optimizer.step()
        method.after_step(synthetic, torch.Generator().manual_seed(2000 + iteration))
    return losses


@pytest.mark.parametrize("n", [6, 40])  # fewer and more instances than the 12 feature dimensions
def test_regression_matches_the_kernel_ridge_formula(n: int) -> None:
    generator = torch.Generator().manual_seed(n)
    features_s, features_t = torch.randn(n, 12, generator=generator), torch.randn(7, 12, generator=generator)
    targets_s = torch.randn(n, 3, generator=generator)
    k_ss = (features_s @ features_s.T).double()
    lam = 1e-2 * torch.trace(k_ss) / n
    expected = (features_t @ features_s.T).double() @ torch.linalg.solve(
        k_ss + lam * torch.eye(n, dtype=torch.float64), targets_s.double()
    )
    assert torch.allclose(feature_regression(features_s, targets_s, features_t, 1e-2).double(), expected, atol=1e-4)


def test_gradients_reach_only_the_synthetic_set_and_lower_the_loss(dataset_uri: str) -> None:
    method, synthetic, real = (
        FeatureRegression(build_convnet, batch_real=32, pool_size=1),
        _images(),
        _real(dataset_uri, frames=True),
    )
    method.after_step(synthetic, torch.Generator().manual_seed(0))  # trains the pool, and must leave no gradient behind
    assert synthetic.values.grad is None
    before = [p.clone() for p in method.pool.parameters()]
    optimizer = torch.optim.Adam(synthetic.parameters(), lr=0.01)
    losses = []
    for _ in range(5):  # the same sample (pool model and real batch) every time
        optimizer.zero_grad(set_to_none=True)
        losses.append(method.accumulate(synthetic, _sample(real, 7), 1.0).item())
        assert synthetic.values.grad is not None and synthetic.values.grad.abs().sum() > 0
        optimizer.step()
    assert all(p.grad is None for p in method.pool.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, method.pool.parameters()))
    assert losses[-1] < 0.9 * losses[0], losses


def test_video_runs_repeat_exactly_and_train_the_pool(dataset_uri: str) -> None:
    def run() -> tuple[list[float], FeatureRegression]:
        method = FeatureRegression(build_minic3d, batch_real=16, pool_size=2, seed=3)
        return _run(method, _videos(), _real(dataset_uri, frames=False), range(4)), method

    (first, method), (second, _) = run(), run()
    assert first == second and all(torch.isfinite(torch.tensor(first)))
    assert sum(method.updates) == 4 + 50  # the second model starts at age 100 // 2
    fresh = FeatureRegression(build_minic3d, batch_real=16, pool_size=2, seed=3)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.pool.parameters(), method.pool.parameters()))


def test_a_resumed_run_continues_exactly(dataset_uri: str, tmp_path: Path) -> None:
    real = _real(dataset_uri, frames=True)

    def make(seed: int) -> FeatureRegression:
        return FeatureRegression(build_convnet, batch_real=32, pool_size=2, max_online_updates=3, seed=seed)

    method, synthetic = make(0), _images()
    _run(
        method, synthetic, real, range(5)
    )  # a pool model restarts before the checkpoint; one trained after it uses saved Adam state
    torch.save({"method": method.state_dict(), "synthetic": synthetic.state_dict()}, tmp_path / "checkpoint.pt")
    saved_updates, saved_seeds = list(method.updates), list(method.seeds)
    uninterrupted = _run(method, synthetic, real, range(5, 10))

    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    resumed, resumed_synthetic = make(1), _images(seed=1)  # other seeds: only the checkpoint can make them agree
    resumed.load_state_dict(state["method"])
    resumed_synthetic.load_state_dict(state["synthetic"])
    assert resumed.updates == saved_updates and resumed.seeds == saved_seeds
    assert _run(resumed, resumed_synthetic, real, range(5, 10)) == uninterrupted


def test_a_model_restarts_after_max_online_updates() -> None:
    assert FeatureRegression(build_convnet, batch_real=8, pool_size=4, max_online_updates=10).updates == [0, 2, 4, 6]
    method, synthetic = FeatureRegression(build_convnet, batch_real=8, pool_size=1, max_online_updates=3), _images()
    first_seed = method.seeds[0]
    initial = [p.clone() for p in method.pool.parameters()]
    generator = torch.Generator().manual_seed(5)
    for expected in (1, 2):
        method.after_step(synthetic, generator)
        assert method.updates == [expected]
    assert not all(torch.equal(a, b) for a, b in zip(initial, method.pool.parameters()))
    assert method.optimizers[0].state
    method.after_step(synthetic, generator)
    assert method.updates == [0] and method.seeds[0] != first_seed and not method.optimizers[0].state
    restarted = fresh_network(build_convnet, method.seeds[0], DEVICE)
    assert all(torch.equal(a, b) for a, b in zip(restarted.parameters(), method.pool.parameters()))
    assert all(not p.requires_grad for p in method.pool.parameters())


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        FeatureRegression(build_convnet, batch_real=8, pool_size=0)
