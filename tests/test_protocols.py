"""The evaluation protocol without Ray: batch re-standardisation, inductive test standardisation, re-pairing,
MiniC3D's heads, the comparison table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from raydd.config import parse_config
from raydd.distill.settings import DistillConfig
from raydd.distilled_set import StaticDynamicParts
from raydd.errors import RayddError
from raydd.evaluate import EvalConfig
from raydd.evaluation.protocols import PROTOCOL, InputStatistics, Protocol
from raydd.evaluation.report import format_comparison
from raydd.evaluation.sources import RepairedStaticDynamic, TensorClips
from raydd.evaluation.train import TrainSettings, train_and_test
from raydd.models.hallucinator import Hallucinator
from raydd.models.registry import build_model
from raydd.pipeline import PipelineConfig
from raydd.pipeline.comparison import row_settings

CPU = torch.device("cpu")


NO_RESTANDARDISATION = dataclasses.replace(PROTOCOL, name="plain", restandardise_batches=False)


def test_training_batches_are_restandardised_and_test_clips_read_no_other_test_clip() -> None:
    batch = 3 * torch.randn(4, 3, 2, 5, 5) + 7
    prepared = PROTOCOL.prepare(batch)
    assert prepared.mean().item() == pytest.approx(0, abs=1e-5) and prepared.std().item() == pytest.approx(1, abs=1e-5)
    assert NO_RESTANDARDISATION.prepare(batch) is batch
    seen = InputStatistics()
    for part in batch.split(3):  # the training batches, pooled
        seen.add(part)
    test = 2 * torch.randn(6, 3, 2, 5, 5) + 1
    expected = (test - batch.mean()) / batch.std(unbiased=False)
    assert torch.allclose(PROTOCOL.prepare_test(test, seen), expected, atol=1e-5)
    for statistics in ("train", "clip"):  # a clip alone or among others: the same input
        protocol = dataclasses.replace(PROTOCOL, test_statistics=statistics)
        assert torch.allclose(protocol.prepare_test(test, seen)[:1], protocol.prepare_test(test[:1], seen), atol=1e-6)
    reference = dataclasses.replace(PROTOCOL, test_statistics="batch")  # the reference's: transductive
    assert not torch.allclose(reference.prepare_test(test, seen)[:1], reference.prepare_test(test[:2], seen)[:1])
    with pytest.raises(RayddError, match="test_statistics 'test': use one of train, clip, batch"):
        dataclasses.replace(PROTOCOL, test_statistics="test")
    with pytest.raises(RayddError, match="no training batch was seen"):
        InputStatistics().mean_std()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_input_statistics_summed_by_chunks_equal_a_whole_float64_copy(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    """The chunks (3 and a part per batch here) change only the order of float64 additions, never a term: the
    float32 mean and std are those of one float64 copy of everything, to float32's rounding. Squaring in the inputs'
    own dtype before a float64 sum fails it for both dtypes (the offset of 100 magnifies the rounded squares)."""
    monkeypatch.setattr(InputStatistics, "CHUNK", 1000)
    generator = torch.Generator().manual_seed(0)
    batches = [(3 * torch.randn(7, 3, 2, 12, 12, generator=generator) + 100).to(dtype) for _ in range(3)]
    seen = InputStatistics()
    for batch in batches:
        seen.add(batch)
    whole = torch.cat([batch.reshape(-1) for batch in batches]).double()
    mean, std = seen.mean_std()
    assert mean.item() == pytest.approx(whole.mean().item(), rel=1e-7)
    assert std.item() == pytest.approx(whole.std(unbiased=False).item(), rel=1e-7)


def _run(protocol: Protocol, scale: float, shift: float, test_scale: float = 1.0, test_shift: float = 0.0):
    generator = torch.Generator().manual_seed(0)
    videos = torch.randn(6, 3, 4, 16, 16, generator=generator)
    labels = torch.arange(3).repeat(2)
    train = TensorClips(scale * videos + shift, labels)
    settings = TrainSettings("minic3d", epochs=2, lr=0.01, batch_size=6, seed=1)  # no normalisation layer in MiniC3D
    test = TensorClips(
        test_scale * torch.randn(9, 3, 4, 16, 16, generator=generator) + test_shift, torch.arange(3).repeat(3)
    )
    return train_and_test(
        settings, train, test, num_classes=3, clip_shape=(4, 16, 16, 3), device=CPU, protocol=protocol
    )


def test_training_is_blind_to_an_affine_change_of_the_training_set_and_so_is_the_score_of_the_same_change() -> None:
    """Re-standardised batches make the training blind to an affine change of the whole training set; test clips
    standardised with the training batches' statistics make the scores blind to the same change of both sets."""
    plain, changed = _run(PROTOCOL, 1.0, 0.0), _run(PROTOCOL, 5.0, 3.0, 5.0, 3.0)
    assert changed.losses == pytest.approx(plain.losses, rel=1e-4)
    assert changed.per_class == pytest.approx(plain.per_class)
    assert _run(NO_RESTANDARDISATION, 5.0, 3.0).losses != pytest.approx(
        _run(NO_RESTANDARDISATION, 1, 0).losses, rel=1e-2
    )


def test_the_protocol_runs_one_extra_pass_and_cuts_the_lr_later() -> None:
    assert (PROTOCOL.passes(10), PROTOCOL.cut_at(10)) == (11, 7)  # lr x0.1 after pass 6 (Epoch // 2 + 1)
    plain = dataclasses.replace(PROTOCOL, extra_pass=False)
    assert (plain.passes(10), plain.cut_at(10)) == (10, 5)
    assert len(_run(PROTOCOL, 1.0, 0.0).losses) == 3 and len(_run(plain, 1.0, 0.0).losses) == 2


def _parts(num_classes: int = 2, ipc: int = 2, frames: int = 4) -> StaticDynamicParts:
    spc = dpc = 2 * ipc
    static = torch.randn(num_classes * spc, 3, 8, 8)
    dynamic = torch.randn(num_classes * dpc, 1, frames, 4, 4)
    meta = {
        "classes": [f"c{i}" for i in range(num_classes)],
        "clip_shape": [frames, 8, 8, 3],
        "ipc": ipc,
        "spc": spc,
        "dpc": dpc,
        "full_video_values_per_class": frames * 8 * 8 * 3,
    }
    return StaticDynamicParts(static, dynamic, Hallucinator(frames=frames).requires_grad_(False), meta)


def test_repairing_draws_fresh_pairs_from_each_slot_and_keeps_labels() -> None:
    parts = _parts()
    source = RepairedStaticDynamic(parts, seed=3)
    slots = torch.arange(len(source))
    assert len(source) == 4 and source.labels.tolist() == [0, 0, 1, 1]
    seen: list[set[tuple[int, int]]] = [set() for _ in slots]
    for _ in range(40):
        static_index, dynamic_index = source.draw(slots)
        for slot, s, d in zip(slots.tolist(), static_index.tolist(), dynamic_index.tolist()):
            seen[slot].add((s, d))
    for slot, pairs in enumerate(seen):  # slot k of class c owns stills/memories c*4 + 2k + {0, 1}
        own = {4 * (slot // 2) + 2 * (slot % 2) + i for i in (0, 1)}
        assert pairs == {(s, d) for s in own for d in own}
    fetches = [source.batch(slots, CPU) for _ in range(6)]
    assert all(labels.tolist() == [0, 0, 1, 1] for _, labels in fetches)
    assert fetches[0][0].shape == (4, 3, 4, 8, 8)
    assert any(not torch.equal(videos, fetches[0][0]) for videos, _ in fetches[1:])


def test_a_fetch_renders_the_drawn_pair_through_h() -> None:
    parts = _parts()
    source, twin = RepairedStaticDynamic(parts, seed=5), RepairedStaticDynamic(parts, seed=5)
    slots = torch.tensor([3, 0, 2])
    videos, labels = source.batch(slots, CPU)
    static_index, dynamic_index = twin.draw(slots)
    expected = parts.hallucinator(parts.static_NCHW[static_index], parts.dynamic_NCTHW[dynamic_index])
    assert torch.allclose(videos, expected)
    assert labels.tolist() == [1, 0, 1]


def test_stills_that_do_not_split_into_slots_are_drawn_from_the_whole_class() -> None:
    parts = _parts()
    meta = {**parts.metadata, "spc": 3}
    odd = StaticDynamicParts(parts.static_NCHW[:6], parts.dynamic_NCTHW, parts.hallucinator, meta)
    source = RepairedStaticDynamic(odd, seed=0)
    slots = torch.arange(len(source))
    drawn: list[set[int]] = [set() for _ in slots]
    for _ in range(60):
        for slot, still in zip(slots.tolist(), source.draw(slots)[0].tolist()):
            drawn[slot].add(still)
    assert drawn == [{0, 1, 2}, {0, 1, 2}, {3, 4, 5}, {3, 4, 5}]  # any still of its class, never another's


def test_still_videos_repeat_each_still_over_the_frames() -> None:
    parts = _parts(num_classes=3, ipc=1, frames=5)
    videos, labels = parts.still_videos()
    assert videos.shape == (6, 3, 5, 8, 8) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert all(torch.equal(videos[:, :, t], parts.static_NCHW) for t in range(5))
    assert parts.stills_storage_ratio() == pytest.approx(2 / 5)  # 2 stills a class against one 5-frame video


def test_dropout_max_head_keeps_parameters_and_embed_and_takes_the_max_over_time() -> None:
    torch.manual_seed(0)
    average = build_model("minic3d", num_classes=7, clip_shape=(8, 32, 32, 3), widths=(8, 16, 16))
    reference = build_model("minic3d", num_classes=7, clip_shape=(8, 32, 32, 3), widths=(8, 16, 16), head="dropout-max")
    reference.load_state_dict(average.state_dict())  # same parameter layout
    videos = torch.randn(5, 3, 8, 32, 32)
    assert torch.equal(average.embed(videos), reference.embed(videos))
    reference.eval()
    logits = reference(videos)
    assert logits.shape == (5, 7) and torch.equal(logits, reference(videos))  # eval: deterministic
    features = reference.features(videos)  # (5, 16, 2, 1, 1) at 8x32x32
    per_time = reference.classifier((features[:, :, :-1] + features[:, :, 1:]) / 2)  # 2-frame average, stride 1
    assert torch.allclose(logits, per_time.flatten(2).max(dim=2).values, atol=1e-6)
    reference.train()
    assert not torch.equal(reference(videos), reference(videos))  # dropout 0.5 while training
    with pytest.raises(ValueError, match="head must be one of"):
        build_model("minic3d", num_classes=7, clip_shape=(8, 32, 32, 3), head="max")


def _metrics(top1: float, protocol: str = "reference-inductive", groups: bool = True) -> dict[str, object]:
    metrics: dict[str, object] = {"top1_mean": top1, "top1_std": 1.25, "protocol": protocol}
    if groups:
        metrics.update(static_top1_mean=top1 + 10, static_top1_std=2.0)
        metrics.update(dynamic_top1_mean=top1 - 10, dynamic_top1_std=3.0)
    return metrics


def test_comparison_table_names_the_protocol_and_the_gain_over_random() -> None:
    rows = {
        "dm static-dynamic": (0.92, _metrics(31.5)),
        "stills only": (0.4, _metrics(20.0, groups=False)),
        "random real clips": (1.0, _metrics(25.0)),
        "full train split": (None, _metrics(90.0)),
    }
    lines = format_comparison(rows, protocol=PROTOCOL.name, title="builtin, IPC 1").splitlines()
    assert lines[0].startswith("builtin, IPC 1 (protocol reference-inductive;") and "gain" in lines[1]
    by_name = {line[:17].strip(): line.split() for line in lines[2:]}
    expected = ["0.920x", "31.5", "±", "1.2", "41.5", "±", "2.0", "21.5", "±", "3.0", "+6.5"]
    assert by_name["dm static-dynamic"][2:] == expected
    assert by_name["stills only"][-3:] == ["-", "-", "-5.0"] and by_name["random real clips"][-1] == "+0.0"
    assert by_name["full train split"][3] == "-" and by_name["full train split"][-1] == "+65.0"
    without_random = format_comparison({"a": (1.0, _metrics(3.0))}, protocol=PROTOCOL.name, title="t")
    assert without_random.splitlines()[-1].split()[-1] == "-"
    mixed = {**rows, "random real clips": (1.0, _metrics(25.0, "reference"))}
    refusal = "'random real clips' was evaluated under protocol 'reference'.*again with this raydd"
    with pytest.raises(RayddError, match=refusal):
        format_comparison(mixed, protocol=PROTOCOL.name, title="t")


def test_no_command_takes_a_protocol_any_more(capsys: pytest.CaptureFixture[str]) -> None:
    """One protocol: raydd's old recipe is a variant of benchmarks/protocol_ablation.py, not a choice."""
    for config, prog, flag in (
        (DistillConfig, "raydd.distill", "--eval-protocol"),
        (PipelineConfig, "raydd.pipeline", "--eval-protocol"),
        (EvalConfig, "raydd.evaluate", "--protocol"),
    ):
        with pytest.raises(SystemExit):
            parse_config(config, [flag, "raydd"], prog)
        assert flag in capsys.readouterr().err


def test_pipeline_evaluates_every_row_with_one_lr_preset(tmp_path: Path) -> None:
    """FRePo's own schedule (lr 1e-4) is made for 1000 epochs; under the pipeline's shortened epochs it leaves a
    FRePo set at chance while random real clips train at lr 1e-2. Every row gets the one preset."""
    outputs = {"static-dynamic": str(tmp_path / "sd"), "naive": str(tmp_path / "naive")}
    config = parse_config(PipelineConfig, ["--method", "frepo", "--store", str(tmp_path)], "raydd.pipeline")[0]
    rows = row_settings(config, outputs)
    assert len(rows) == 4 and {(s.lr_schedule, s.epochs) for s in rows.values()} == {("standard", 100)}
    argv = ["--eval-lr-schedule", "frepo", "--store", str(tmp_path)]
    config = parse_config(PipelineConfig, argv, "raydd.pipeline")[0]
    assert {s.lr_schedule for s in row_settings(config, outputs).values()} == {"frepo"}
    with pytest.raises(SystemExit):
        parse_config(PipelineConfig, ["--eval-lr-schedule", "auto"], "raydd.pipeline")
