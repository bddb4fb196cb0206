"""MTT's memory-bounded backward pass gives the plain unrolled graph's gradient, for both paradigms."""

from __future__ import annotations

import copy

import pytest
import torch

from raydd.data.cache import CACHE_ENV, cache_entry
from raydd.distill.methods.base import MatchingSample
from raydd.distill.methods.mtt import ExpertBank, TrajectoryMatching
from raydd.distill.synthetic import FreeTensors, StaticDynamic, SyntheticSet
from raydd.errors import RayddError
from raydd.experts.trajectories import EXPERTS_KIND, listed_records
from raydd.models.hallucinator import Hallucinator
from raydd.storage import open_manifest, resolve

from .tiny_store import CLASSES, FRAMES, SIDE, write_experts

CPU = torch.device("cpu")


def _method(bank: ExpertBank, *, memory_bounded: bool, precision: str = "fp32") -> TrajectoryMatching:
    # 20 instances in batches of 8 over 4 steps: the plan cuts a permutation into 8, 8, 4 and draws a new one.
    return TrajectoryMatching(
        bank,
        syn_steps=4,
        batch_syn=8,
        expert_epochs=1,
        max_start_epoch=2,
        lr_teacher=0.05,
        learn_lr=True,
        memory_bounded=memory_bounded,
        precision=precision,
    )


def _free_tensors() -> SyntheticSet:
    initial = torch.randn(CLASSES * 2, 3, FRAMES, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    return FreeTensors(CLASSES, 2, (3, FRAMES, SIDE, SIDE), initial=initial)


def _static_dynamic() -> SyntheticSet:
    # One static image and two dynamic memories per class: the random pairing of every step must be
    # drawn again, identically, when the bounded backward pass rebuilds that step.
    generator = torch.Generator().manual_seed(2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        hallucinator = Hallucinator(frames=FRAMES, variant="convtranspose")
    return StaticDynamic(
        torch.randn(CLASSES, 3, SIDE, SIDE, generator=generator),
        num_classes=CLASSES,
        dpc=2,
        dynamic_shape=(1, 2, 8, 8),
        hallucinator=hallucinator,
        initial_dynamic=torch.randn(CLASSES * 2, 1, 2, 8, 8, generator=generator),
    )


def _gradients(
    bank: ExpertBank, synthetic: SyntheticSet, *, memory_bounded: bool, seed: int
) -> tuple[float, list[torch.Tensor]]:
    method, synthetic = _method(bank, memory_bounded=memory_bounded), copy.deepcopy(synthetic)
    sample = MatchingSample(torch.Generator().manual_seed(seed), seed, None, CPU)  # MTT reads no real clips
    loss = method.accumulate(synthetic, sample, 0.5).item()
    learnables = [p for p in synthetic.parameters() if p.requires_grad] + method.learnable()
    return loss, [p.grad.clone() for p in learnables]


@pytest.mark.parametrize("make", [_free_tensors, _static_dynamic], ids=["free-tensors", "static-dynamic"])
def test_memory_bounded_gradient_equals_the_plain_one(bank: ExpertBank, make) -> None:  # noqa: ANN001
    synthetic = make()
    plain_loss, plain = _gradients(bank, synthetic, memory_bounded=False, seed=11)
    bounded_loss, bounded = _gradients(bank, synthetic, memory_bounded=True, seed=11)
    assert bounded_loss == pytest.approx(plain_loss, rel=1e-6)
    assert len(plain) == len(bounded) == len(list(synthetic.parameters())) + 1  # ... and the learned lr
    for g_plain, g_bounded in zip(plain, bounded, strict=True):
        assert g_plain.abs().sum() > 0
        torch.testing.assert_close(g_bounded, g_plain, rtol=1e-4, atol=1e-6)


def test_experts_too_short_for_the_start_epochs_are_refused(bank: ExpertBank) -> None:
    with pytest.raises(
        RayddError, match=r"have 3 epochs but max_start_epoch \+ expert_epochs needs 4: retrain them with --epochs 4"
    ):
        TrajectoryMatching(
            bank,
            syn_steps=2,
            batch_syn=None,
            expert_epochs=2,
            max_start_epoch=2,
            lr_teacher=0.01,
            learn_lr=False,
            memory_bounded=False,
        )


@pytest.mark.s3
def test_a_remote_bank_reads_its_epochs_from_the_node_cache(
    s3_bucket: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    folder = f"{s3_bucket}/experts/builtin/minic3d"
    write_experts(folder, epochs=3)
    write_experts(str(tmp_path / "local"), epochs=3)
    make_them = "python -m raydd.experts"
    expected = ExpertBank(str(tmp_path / "local"), make_them=make_them).epoch(1, 2)
    bank = ExpertBank(folder, make_them=make_them)
    assert torch.equal(bank.epoch(1, 2), expected)
    bank.close()
    location = resolve(folder)
    records = listed_records(open_manifest(location, EXPERTS_KIND, what="experts", make_it=make_them))
    assert all(cache_entry(record.shard).stat().st_size == record.shard.bytes for record in records.values())
    for record in records.values():  # gone from the store: a later bank on this node reads only the manifest
        location.fs.rm(location.child(record.shard.name).path)
    again = ExpertBank(folder, make_them=make_them)
    assert torch.equal(again.epoch(1, 2), expected) and torch.equal(again.epoch(0, 3), bank.epoch(0, 3))
    again.close()
