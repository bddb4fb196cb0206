"""``--worker-split classes`` without Ray: N gloo processes compute the one-worker iteration of DM, FRePo, MTT and DC
(synthetic set, optimiser state, method state, losses, and a resume in between); DM's chunked real path gives the
unchunked loss and gradient; resident clips load as the memory-mapped ones do."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raydd.data.reader import open_prepared
from raydd.distill.driver import _stage_key
from raydd.distill.loop import SingleProcess, TorchDistributed
from raydd.distill.methods.base import MatchingSample, fresh_network
from raydd.distill.methods.dm import DistributionMatching
from raydd.distill.presets import Preset
from raydd.distill.real import RealData, fits_on_device, resident_bytes, should_keep_resident
from raydd.distill.share import owned_classes
from raydd.distill.stages import StageSpec, build_stage, matching_network
from raydd.distill.synthetic import FreeTensors
from raydd.errors import RayddError

from .tiny_store import CLASSES, CLIP_SHAPE, FRAMES, SIDE, write_stages_store

CPU = torch.device("cpu")
# Momentum and large lrs: three iterations move the set far from its start, and the momentum buffers (part of
# the optimiser state a resumed run needs) must be assembled from their owners too.
DM = Preset(
    iterations=3, lr_img=1e4, lr_static=1e4, lr_dynamic=1e5, lr_hal=1.0, momentum=0.5, batch_real=4, network_width=8
)
MTT = Preset(
    iterations=3,
    lr_img=100.0,
    lr_static=100.0,
    lr_dynamic=10.0,
    lr_hal=1e-3,
    momentum=0.5,
    syn_steps=3,
    batch_syn=5,
    expert_epochs=1,
    max_start_epoch=2,
    lr_teacher=0.05,
    learn_lr=True,
    lr_lr=1e-5,
    network_width=8,
)
FREPO = Preset(iterations=3, lr_img=1e-2, lr_static=1e-2, lr_dynamic=1e-3, lr_hal=1e-5, batch_real=16, network_width=8)
DC = Preset(
    iterations=3, lr_img=30.0, lr_static=3.0, lr_dynamic=30.0, lr_hal=1e-3, momentum=0.5, batch_real=4, network_width=8
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(write_stages_store(str(tmp_path_factory.mktemp("store"))))


def _spec(store: Path, stage: str, method: str = "dm", **overrides) -> StageSpec:  # noqa: ANN003
    experts = store / "experts" / ("convnet" if stage == "static" else "minic3d")
    fields = dict(
        stage=stage,
        method=method,
        dataset_uri=str(store / "datasets" / "builtin"),
        ipc=1,
        seed=7,
        preset={"frepo": FREPO, "mtt": MTT, "dc": DC}.get(method, DM),
        static_uri=str(store / "static"),
        experts_uri=str(experts),
    )
    return StageSpec(**{**fields, **overrides})


def _group_member(rank: int, world: int, init_file: str, spec: StageSpec, resume_at: int, out: str) -> None:
    """One worker: ``resume_at`` iterations, a checkpoint, a fresh worker resuming from it, the rest."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        distiller = build_stage(spec, TorchDistributed(), CPU)
        losses = [distiller.step(i).loss for i in range(resume_at)]
        own_rows = [p.detach().clone() for p in distiller.class_learnables]  # before the assembly: right on own rows
        distiller.synchronise()
        checkpoint = copy.deepcopy(distiller.state(resume_at))  # as written to storage: not the live tensors
        resumed = build_stage(spec, TorchDistributed(), CPU)
        resumed.restore(copy.deepcopy(checkpoint))
        losses += [resumed.step(i).loss for i in range(resume_at, spec.preset.iterations)]
        resumed.synchronise()
        final = resumed.state(spec.preset.iterations)
        result = {"losses": losses, "checkpoint": checkpoint, "final": final, "own_rows": own_rows}
        torch.save({**result, "classes": resumed.classes}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _one_worker(spec: StageSpec, resume_at: int) -> tuple[list[float], dict, dict]:
    distiller = build_stage(spec, SingleProcess(), CPU)
    losses = [distiller.step(i).loss for i in range(resume_at)]
    checkpoint = copy.deepcopy(distiller.state(resume_at))  # state() holds the live tensors
    losses += [distiller.step(i).loss for i in range(resume_at, spec.preset.iterations)]
    return losses, checkpoint, distiller.state(spec.preset.iterations)


def _close(actual: torch.Tensor, expected: torch.Tensor, name: str, atol: float = 1e-5) -> None:
    """Equal to float rounding: relative to the tensor's own scale (gradients here reach 1e2)."""
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=atol * scale, msg=name)


def _assert_same_state(state: dict, reference: dict, adam_atol: float = 1e-5) -> None:
    for part in ("synthetic", "method"):  # the method's: FRePo's pool, trained on every worker alike
        for name, tensor in reference[part].items():
            # A pool conv's bias feeds a GroupNorm that cancels it: its gradient is rounding noise, which Adam
            # turns into steps of +-lr (3e-4) either way; it changes no output.
            if isinstance(tensor, torch.Tensor):
                cancelled = name.startswith("pool.") and name.endswith(".bias")
                atol = 1e-3 if cancelled else adam_atol if part == "synthetic" else 1e-5
                _close(state[part][name], tensor, name, atol=atol)
    for key, saved in reference["optimizer"]["state"].items():
        for name, tensor in saved.items():
            _close(state["optimizer"]["state"][key][name], tensor, f"optimizer {key} {name}", atol=adam_atol)


@pytest.mark.parametrize(
    ("method", "stage", "world"),
    [
        ("dm", "naive", 2),
        ("dm", "dynamic", 2),
        ("dm", "static", 3),
        ("frepo", "static", 2),
        ("frepo", "dynamic", 3),
        ("mtt", "naive", 2),
        ("mtt", "dynamic", 3),
        ("dc", "static", 3),
        ("dc", "dynamic", 2),
    ],
)
@pytest.mark.slow
def test_workers_split_by_classes_compute_what_one_worker_computes(
    store: Path, tmp_path: Path, method: str, stage: str, world: int
) -> None:
    # MTT's stage 2 runs the memory-bounded backward pass (it rebuilds each student step, all-reduces included).
    spec = _spec(store, stage, method, split="classes", memory_bounded=method == "mtt" and stage == "dynamic")
    losses, checkpoint, final = _one_worker(spec, resume_at=2)
    mp.spawn(_group_member, args=(world, str(tmp_path / "init"), spec, 2, str(tmp_path)), nprocs=world)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    assert [r["classes"] for r in ranks] == [owned_classes(CLASSES, r, world) for r in range(world)]
    for result in ranks:
        assert result["losses"] == pytest.approx(losses, rel=1e-4)
        # Adam (FRePo) divides by sqrt(v): where a pixel's gradient is near zero (the built-in clips' plain background
        # makes many), summing it over workers in another order moves the step by up to ~3e-5 of the tensor's scale.
        adam_atol = 1e-4 if method == "frepo" else 1e-5
        _assert_same_state(result["checkpoint"], checkpoint, adam_atol)
        _assert_same_state(result["final"], final, adam_atol)
    # Before the assembly each worker's own rows were already the one-worker result, and the others' were not.
    (name,) = [n for n in checkpoint["synthetic"] if n in ("values", "dynamic")]
    rows = checkpoint["synthetic"][name].shape[0] // CLASSES
    for result in ranks:
        (own,) = result["own_rows"]
        mine = slice(result["classes"].start * rows, result["classes"].stop * rows)
        _close(own[mine], checkpoint["synthetic"][name][mine], name, atol=adam_atol)
        others = torch.ones(len(own), dtype=torch.bool)
        others[mine] = False
        assert (own[others] - checkpoint["synthetic"][name][others]).abs().max() > 1e-3


def test_on_one_worker_both_splits_are_the_same_run(store: Path) -> None:
    classes, _, _ = _one_worker(_spec(store, "dynamic", split="classes"), resume_at=1)
    samples, _, _ = _one_worker(_spec(store, "dynamic", split="samples"), resume_at=1)
    assert classes == samples


class _Member:
    """A member of a group that is never reduced over: enough to reach build_stage's checks."""

    def __init__(self, world_size: int) -> None:
        self.rank, self.world_size = 0, world_size


def test_a_class_split_that_cannot_work_is_refused(store: Path) -> None:
    with pytest.raises(RayddError, match=r"use at most 10 workers, or --worker-split samples"):
        build_stage(_spec(store, "naive", split="classes"), _Member(11), CPU)


def _real(store: Path, *, frames: bool) -> RealData:
    dataset = open_prepared(str(store / "datasets" / "builtin"))
    return RealData(dataset.split("train"), dataset.mean, dataset.std, CPU, frames=frames)


@pytest.mark.parametrize("stage", ["naive", "static"])
def test_chunked_dm_gives_the_loss_and_gradient_of_the_whole_sample_as_floats(store: Path, stage: str) -> None:
    real = _real(store, frames=stage == "static")
    item = (3, SIDE, SIDE) if stage == "static" else (3, FRAMES, SIDE, SIDE)
    initial = torch.randn(CLASSES * 2, *item, generator=torch.Generator().manual_seed(1))
    build = matching_network(_spec(store, stage), CLASSES, CLIP_SHAPE)
    batch_real, seed = 4, 11

    # The unchunked computation: the whole classes x batch_real sample as floats, one forward.
    synthetic = FreeTensors(CLASSES, 2, item, initial=initial)
    generator = torch.Generator().manual_seed(seed)
    net = fresh_network(build, seed, CPU).requires_grad_(False)
    whole = real.per_class(batch_real, generator)
    assert whole.shape[0] == CLASSES * batch_real
    with torch.no_grad():
        real_mean = net.embed(whole).view(CLASSES, batch_real, -1).mean(1)
    synthetic_mean = net.embed(synthetic.draw(torch.arange(len(synthetic)), generator)).view(CLASSES, 2, -1).mean(1)
    expected = ((real_mean - synthetic_mean) ** 2).sum()
    expected.backward()

    for chunk in (3, 8, 256):  # a class in pieces of 3 and 1; two classes a block; the whole sample
        chunked = FreeTensors(CLASSES, 2, item, initial=initial)
        method = DistributionMatching(build, batch_real=batch_real, real_chunk=chunk)
        loss = method.accumulate(chunked, MatchingSample(torch.Generator().manual_seed(seed), seed, real, CPU), 1.0)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        torch.testing.assert_close(chunked.values.grad, synthetic.values.grad, rtol=1e-4, atol=1e-7)


def test_resident_clips_load_as_the_mapped_ones(store: Path) -> None:
    mapped, resident = _real(store, frames=True), _real(store, frames=True)
    rows = resident.rows_of(range(2, 5))
    assert torch.equal(resident.videos.labels[rows].unique(), torch.tensor([2, 3, 4]))
    resident.keep_resident(rows, chunk=7)  # on the CPU only when asked: build_stage's own rule never copies clips there
    assert resident.resident_clips == len(rows)
    for generator_seed in (0, 1):
        draw = mapped.draw_per_class(3, torch.Generator().manual_seed(generator_seed))
        own = draw.part(2 * 3, 5 * 3)  # resident: a gather of the resident copy
        assert torch.equal(resident.load(own), mapped.load(own))
        assert torch.equal(resident.load(draw), mapped.load(draw))  # some rows are not resident: read as before


@pytest.mark.parametrize("method", ["dm", "frepo"])
def test_a_stage_asked_to_keep_its_clips_resident_computes_what_the_streamed_one_does(store: Path, method: str) -> None:
    """``build_stage(resident=...)`` overrides the workers' rule (benchmarks/gpu_check.py times both data paths)."""
    spec = _spec(store, "naive", method)
    resident = build_stage(spec, SingleProcess(), CPU, resident=True)
    streamed = build_stage(spec, SingleProcess(), CPU, resident=False)
    assert resident.real.resident_clips == len(resident.real.indices) and streamed.real.resident_clips == 0
    assert build_stage(spec, SingleProcess(), CPU).real.resident_clips == 0  # the rule: never on the CPU
    for iteration in range(2):
        assert resident.step(iteration).loss == streamed.step(iteration).loss
    assert torch.equal(resident.synthetic.values, streamed.synthetic.values)


def test_resident_bytes_and_what_fits() -> None:
    assert resident_bytes(25_600, (8, 64, 64, 3)) == 25_600 * 98_304
    assert fits_on_device(3 * 2**30, 20 * 2**30) and not fits_on_device(3 * 2**30, 5 * 2**30)
    assert fits_on_device(3 * 2**30, 5 * 2**30, fraction=0.8)
    assert not should_keep_resident(1, (8, 64, 64, 3), CPU)  # on the CPU the memory map is the resident copy


def test_the_split_names_the_stage_run() -> None:
    spec = StageSpec(stage="naive", method="dm", dataset_uri="x", ipc=1, preset=DM)
    assert spec.split == "classes" and _stage_key(dataclasses.replace(spec, split="samples")) != _stage_key(spec)
