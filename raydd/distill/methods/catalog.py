"""The method registry: what each distillation method needs, in one table; the rest of raydd asks this
module instead of testing a method's name. (Named catalog.py: ``models/registry.py`` has the other name.)

Adding a method: its file in this package (the :class:`~raydd.distill.methods.base.Method` protocol), a
builder here, and one row of :data:`REGISTRY`. Which network a stage matches with (and so which experts MTT
reads) is the stage's, not the method's: :func:`raydd.distill.stages.stage_model`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from raydd.devices import autocast_dtype
from raydd.errors import RayddError
from raydd.evaluation.protocols import FREPO, STANDARD

if TYPE_CHECKING:
    import torch
    from torch import nn

    from raydd.distill.methods.mtt import ExpertBank
    from raydd.distill.presets import Preset

SGD, ADAM = "sgd", "adam"


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a builder may use: the preset, a factory of fresh matching networks, the experts (MTT), the seed."""

    preset: Preset
    network: Callable[[], nn.Module]
    experts: Callable[[], ExpertBank]  # opened only by a method that needs experts
    seed: int
    memory_bounded: bool


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    name: str
    build: Callable[[BuildContext], nn.Module]
    optimiser: str  # of the synthetic tensors: SGD with the preset's momentum, or Adam (FRePo's reference)
    eval_preset: str  # raydd.evaluation.protocols: the lr and epochs its sets are evaluated with (Suppl. 11.3)
    needs_experts: bool = False  # matches expert trajectories (python -m raydd.experts), not real clips
    reads_real: bool = True  # reads real clips every iteration (MTT only at initialisation)
    real_per_class: bool = True  # draws batch_real clips per class (a class-split worker reads its own classes')
    unrolls_student: bool = False  # trains a student for syn_steps steps on the synthetic set (--memory-bounded)
    # the --precision values under which it computes in bfloat16 somewhere (auto: where the hardware has it)
    lower_precisions: tuple[str, ...] = ()


def _dm(context: BuildContext) -> nn.Module:
    from raydd.distill.methods.dm import DistributionMatching

    p = context.preset
    return DistributionMatching(
        context.network, batch_real=p.batch_real, features=p.match_features, precision=p.precision
    )


def _dc(context: BuildContext) -> nn.Module:
    from raydd.distill.methods.dc import GradientMatching

    return GradientMatching(context.network, batch_real=context.preset.batch_real)


def _mtt(context: BuildContext) -> nn.Module:
    from raydd.distill.methods.mtt import TrajectoryMatching

    p = context.preset
    return TrajectoryMatching(
        context.experts(),
        syn_steps=p.syn_steps,
        batch_syn=p.batch_syn,
        expert_epochs=p.expert_epochs,
        max_start_epoch=p.max_start_epoch,
        lr_teacher=p.lr_teacher,
        learn_lr=p.learn_lr,
        memory_bounded=context.memory_bounded,
        precision=p.precision,
    )


def _frepo(context: BuildContext) -> nn.Module:
    from raydd.distill.methods.frepo import FeatureRegression

    return FeatureRegression(context.network, batch_real=context.preset.batch_real, seed=context.seed)


REGISTRY: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("dm", _dm, SGD, STANDARD, lower_precisions=("auto", "bf16")),
        MethodInfo(
            "mtt",
            _mtt,
            SGD,
            STANDARD,
            needs_experts=True,
            reads_real=False,
            real_per_class=False,
            unrolls_student=True,
            lower_precisions=("bf16",),
        ),
        MethodInfo("frepo", _frepo, ADAM, FREPO, real_per_class=False),
        MethodInfo("dc", _dc, SGD, STANDARD),
    )
}


def method_info(name: str) -> MethodInfo:
    if name not in REGISTRY:
        raise RayddError(f"unknown distillation method {name!r}: use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def low_precision_of(method: str, precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype ``method`` computes in where not float32, under ``--precision`` on ``device``; None: all fp32."""
    return autocast_dtype(precision, device) if precision in method_info(method).lower_precisions else None
