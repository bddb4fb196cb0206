"""A distillation iteration reads the device back once: the loop's loss and verdict, nothing in the methods.

On a GPU every host read of device data (``.item()``, a boolean mask, ``nonzero``, ``linalg.solve``'s error check)
and every copy to the device that the host waits for makes the GPU idle until the host catches up; on the CPU
nothing shows them, so :class:`tests.device_reads.DeviceReads` counts them. Each method and paradigm runs one
iteration of the loop under it, on one worker and (slow) on two workers of a class split.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor

from raydd.distill.loop import SingleProcess, TorchDistributed
from raydd.distill.methods.base import MatchingSample
from raydd.distill.stages import StageSpec, build_stage
from raydd.distill.synthetic import SyntheticSet
from tests.device_reads import DeviceReads

from .test_split import _spec
from .tiny_store import write_stages_store

CPU = torch.device("cpu")
# (method, stage, memory_bounded): naive and static-dynamic (stage 1 stills, stage 2 dynamic memories) of each
# method; MTT's two backward passes.
RUNS = [
    ("dm", "naive", False),
    ("dm", "static", False),
    ("dm", "dynamic", False),
    ("dc", "naive", False),
    ("dc", "dynamic", False),
    ("mtt", "naive", False),
    ("mtt", "dynamic", True),
    ("frepo", "static", False),
    ("frepo", "dynamic", False),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(write_stages_store(str(tmp_path_factory.mktemp("store"))))


def _reads_of_an_iteration(spec: StageSpec, collective, iteration: int = 0) -> list[str]:  # noqa: ANN001
    """The reads of iteration ``iteration`` (the build and the iterations before it are not counted)."""
    with DeviceReads() as reads:
        distiller = build_stage(spec, collective, CPU)
        for i in range(iteration):
            distiller.step(i)
        reads.clear()
        distiller.step(iteration)
    return list(reads.reads)


@pytest.mark.parametrize(("method", "stage", "memory_bounded"), RUNS)
def test_an_iteration_reads_the_device_once(store: Path, method: str, stage: str, memory_bounded: bool) -> None:
    # iteration 1: the optimiser's state exists (Adam's step count is on the host, its moments on the device)
    reads = _reads_of_an_iteration(_spec(store, stage, method, memory_bounded=memory_bounded), SingleProcess(), 1)
    assert reads == ["tolist"]


class _Syncing:
    """A real method whose ``accumulate`` reads its loss on the host, as every method did before."""

    def __init__(self, method) -> None:  # noqa: ANN001
        self.method = method

    def accumulate(self, synthetic: SyntheticSet, sample: MatchingSample, weight: float) -> Tensor:
        loss = self.method.accumulate(synthetic, sample, weight)
        return torch.tensor(loss.item())

    def __getattr__(self, name: str) -> object:
        return getattr(self.method, name)


def test_a_method_that_reads_its_loss_is_counted(store: Path) -> None:
    spec = _spec(store, "dynamic", "dm")
    with DeviceReads() as reads:
        distiller = build_stage(spec, SingleProcess(), CPU)
        distiller.method = _Syncing(distiller.method)
        reads.clear()
        distiller.step(0)
    assert reads.reads == ["item", "tolist"]


def test_the_counter_sees_the_reads_that_stall_a_gpu_and_not_host_work() -> None:
    with DeviceReads() as reads:
        x = torch.randn(8).to(CPU)  # on "the device" from here on
        host = torch.randint(5, (3,), generator=torch.Generator().manual_seed(0))  # stays on the host on a GPU too
        with reads.counting() as counted:
            int(host[0]), bool((host > 0).all()), host[host > 2], host.tolist()
            y = (x * 2).sum()
        assert counted == []
        with reads.counting() as counted:
            y.item()
            bool(x.max() > 0)
            x[x > 0]
            torch.nonzero(x)
            torch.unique(x)
            F.one_hot(x.long().abs())  # its range check: min and max (on CUDA: the max, without num_classes)
            torch.linalg.solve(torch.eye(2, device=CPU), torch.ones(2, 1, device=CPU))  # its error flag
            host.to(CPU)  # a copy to the device that the host waits for
            x[x > 0] = 0
            torch.tensor([1.0], device=CPU)
        assert counted == [
            "item",
            "__bool__",
            "aten.index.Tensor",
            "aten.nonzero.default",
            "aten._unique2.default",
            "aten._local_scalar_dense.default",
            "aten._local_scalar_dense.default",
            "aten._linalg_check_errors.default",
            "blocking to to the device",
            "aten.index_put_.default",
            "blocking tensor to the device",
        ]
        with reads.counting() as counted:
            torch.linalg.solve_ex(torch.eye(2, device=CPU), torch.ones(2, 1, device=CPU))
            x.to(CPU, non_blocking=True)
        assert counted == []


def _group_member(rank: int, world: int, init_file: str, specs: list[StageSpec], out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        reads = [_reads_of_an_iteration(spec, TorchDistributed(), 1) for spec in specs]
        torch.save(reads, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_class_split_iteration_reads_the_device_once(store: Path, tmp_path: Path) -> None:
    # MTT keeps its worker's part of a student batch by position, FRePo gathers features, DM and DC embed their own
    specs = [_spec(store, stage, method, memory_bounded=bounded, split="classes") for method, stage, bounded in RUNS]
    mp.spawn(_group_member, args=(2, str(tmp_path / "init"), specs, str(tmp_path)), nprocs=2)
    for rank in range(2):
        reads = torch.load(tmp_path / f"rank{rank}.pt")
        assert reads == [["tolist"]] * len(specs), (rank, list(zip(RUNS, reads, strict=True)))
