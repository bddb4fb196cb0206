"""Build one stage's :class:`~raydd.distill.loop.Distiller` from a picklable :class:`StageSpec`.

Stages: ``naive`` (full videos, video network), ``static`` (stage 1: still images matched on single
frames with the image ConvNet) and ``dynamic`` (stage 2: dynamic memories + H, static images frozen,
video network). Each Ray Train worker calls :func:`build_stage` itself, so only this small spec
travels, and every worker builds bit-identical initial tensors from the seed.

Stage 1 is fitted and written in one place (:func:`fit_and_write_static`): the still images of a static-dynamic
run, learnt on Ray Train by the distill engine or in one process by a sweep (:func:`fit_in_process`), stored with
their class-major labels and the settings that made them (where later runs and trials reuse them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from raydd.classes import class_major_labels
from raydd.data.reader import open_prepared
from raydd.devices import configure_cuda, pick_device
from raydd.distill.artifact import read_static, write_static
from raydd.distill.loop import CLASSES, Collective, Distiller, LearningRate, SingleProcess, build_optimizer, sample_seed
from raydd.distill.methods.catalog import BuildContext, method_info
from raydd.distill.methods.mtt import ExpertBank
from raydd.distill.presets import Preset
from raydd.distill.real import RealData, should_keep_resident
from raydd.distill.synthetic import FreeTensors, StaticDynamic, SyntheticSet
from raydd.errors import RayddError
from raydd.models.hallucinator import Hallucinator
from raydd.models.registry import build_model

NAIVE, STATIC, DYNAMIC = "naive", "static", "dynamic"


@dataclasses.dataclass(frozen=True)
class StageSpec:
    stage: str  # NAIVE, STATIC or DYNAMIC
    method: str
    dataset_uri: str
    ipc: int
    preset: Preset
    seed: int = 0
    static_uri: str | None = None  # DYNAMIC: stage 1's images
    experts_uri: str | None = None  # MTT: STORE/experts/DATASET/MODEL
    samples_per_worker: int = 1
    memory_bounded: bool = False  # MTT
    device: str = "auto"
    split: str = CLASSES  # how workers share an iteration (loop.py): CLASSES or SAMPLES

    @property
    def per_class(self) -> int:
        """Free tensors per class: IPC videos (naive) or SPC still images (stage 1)."""
        return self.ipc * self.preset.static_per_ipc if self.stage == STATIC else self.ipc

    @property
    def dpc(self) -> int:
        return self.ipc * self.preset.dynamic_per_ipc


def stage_model(stage: str) -> str:
    """The network a stage matches with, and so the experts MTT reads for it: the image ConvNet for stage 1's
    still images, MiniC3D for videos."""
    return "convnet" if stage == STATIC else "minic3d"


def matching_network(
    spec: StageSpec, num_classes: int, clip_shape: tuple[int, int, int, int]
) -> Callable[[], nn.Module]:
    width = spec.preset.network_width
    if stage_model(spec.stage) == "convnet":
        return lambda: build_model("convnet", num_classes=num_classes, clip_shape=clip_shape, net_width=width)
    return lambda: build_model(
        "minic3d", num_classes=num_classes, clip_shape=clip_shape, widths=(max(1, width // 2), width, width)
    )


def dynamic_shape(spec: StageSpec, clip_shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    t, h, w, _ = clip_shape
    p = spec.preset
    return (p.dynamic_channels, p.dynamic_frames or t, max(1, h // p.dynamic_scale), max(1, w // p.dynamic_scale))


def _synthetic(
    spec: StageSpec, real: RealData, num_classes: int, clip_shape: tuple[int, int, int, int], device: torch.device
) -> tuple[SyntheticSet, list[LearningRate]]:
    t, h, w, c = clip_shape
    init = torch.Generator().manual_seed(sample_seed(spec.seed, spec.stage + "/init", 0, 0))
    p = spec.preset
    if spec.stage in (NAIVE, STATIC):
        item = (c, h, w) if spec.stage == STATIC else (c, t, h, w)
        initial = (
            real.per_class(spec.per_class, init).cpu()
            if p.init == "real"
            else torch.randn((num_classes * spec.per_class, *item), generator=init)
        )
        synthetic = FreeTensors(num_classes, spec.per_class, item, initial=initial)
        if p.pixel_range == "data":
            synthetic.bound_to(*real.pixel_range())
        flag, lr = ("lr_static", p.lr_static) if spec.stage == STATIC else ("lr_img", p.lr_img)
        return synthetic.to(device), [LearningRate(flag, [synthetic.values], _required(lr, flag))]
    if spec.static_uri is None:
        raise RayddError("stage 2 needs the static images of stage 1 (--static URI)")
    static, _ = read_static(spec.static_uri, num_classes=num_classes, image_shape=(c, h, w))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sample_seed(spec.seed, "hallucinator", 0, 0))
        hallucinator = Hallucinator(frames=t, channels=c, dynamic_channels=p.dynamic_channels, variant=p.hallucinator)
    memory_shape = dynamic_shape(spec, clip_shape)
    if p.dynamic_init == "real":
        dynamic = real_motion(real.per_class(spec.dpc, init).cpu(), memory_shape)
    else:
        dynamic = p.dynamic_std * torch.randn((num_classes * spec.dpc, *memory_shape), generator=init)
    if p.hal_init == "identity":
        identity_composition(hallucinator)
    synthetic = StaticDynamic(
        static,
        num_classes=num_classes,
        dpc=spec.dpc,
        dynamic_shape=memory_shape,
        hallucinator=hallucinator,
        initial_dynamic=dynamic,
    )
    groups = [
        LearningRate("lr_dynamic", [synthetic.dynamic], _required(p.lr_dynamic, "lr_dynamic")),
        LearningRate("lr_hal", list(hallucinator.parameters()), _required(p.lr_hal, "lr_hal")),
    ]
    return synthetic.to(device), groups


def real_motion(clips_NCTHW: torch.Tensor, memory_shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Dynamic memories that start as real clips' motion: each clip less its mean over time, averaged over
    colours, pooled to the memories' frames and resolution, in every dynamic channel. Under the identity
    composition a rendered video then begins as its still plus that clip's moving residual."""
    channels, frames, height, width = memory_shape
    residual = (clips_NCTHW - clips_NCTHW.mean(dim=2, keepdim=True)).mean(dim=1, keepdim=True)
    pooled = nn.functional.adaptive_avg_pool3d(residual, (frames, height, width))
    return pooled.expand(-1, channels, -1, -1, -1).contiguous()


@torch.no_grad()
def identity_composition(hallucinator: Hallucinator) -> None:
    """H starts as video = static image + mean of the dynamic channels, in every frame and colour: the
    rendered videos begin as the stage-1 images (real-data statistics) instead of a random linear
    mix of them, which the test videos never look like."""
    conv = hallucinator.net
    if not isinstance(conv, nn.Conv3d):
        raise RayddError("--hal-init identity needs --hallucinator conv")
    colours, dynamic_channels = conv.out_channels, conv.in_channels - conv.out_channels
    conv.weight.zero_()
    conv.bias.zero_()
    for c in range(colours):
        conv.weight[c, c, 1, 1, 1] = 1.0
        conv.weight[c, colours:, 1, 1, 1] = 1.0 / dynamic_channels


def _required(lr: float | None, flag: str) -> float:
    if lr is None:
        raise RayddError(f"no preset gives {flag} for this dataset, method and IPC: pass --{flag.replace('_', '-')}")
    return lr


def build_stage(
    spec: StageSpec,
    collective: Collective,
    device: torch.device,
    *,
    real_indices: np.ndarray | None = None,
    resident: bool | None = None,
) -> Distiller:
    """``real_indices``: the training clips the stage may match (default: the whole train split). ``resident``: keep
    the clips the worker reads on ``device`` as uint8 (True), never (False), or where they fit (None, the workers'
    rule: :func:`~raydd.distill.real.should_keep_resident`); benchmarks/gpu_check.py times both data paths."""
    configure_cuda(device, fixed_shapes=True)  # every iteration of a stage has the same shapes
    dataset = open_prepared(spec.dataset_uri)
    clip_shape = tuple(dataset.manifest.metadata["clip_shape"])
    num_classes = len(dataset.classes)
    if spec.split == CLASSES and collective.world_size > num_classes:
        raise RayddError(
            f"--worker-split classes gives each worker at least one class: "
            f"use at most {num_classes} workers, or --worker-split samples"
        )
    real = RealData(
        dataset.split("train"), dataset.mean, dataset.std, device, frames=spec.stage == STATIC, indices=real_indices
    )
    synthetic, groups = _synthetic(spec, real, num_classes, clip_shape, device)
    p = spec.preset
    info = method_info(spec.method)

    def experts() -> ExpertBank:
        make_them = f"python -m raydd.experts --dataset {dataset.spec.name} --model {stage_model(spec.stage)}"
        bank = ExpertBank(spec.experts_uri or "", make_them=make_them)
        bank.check_fits(num_classes, clip_shape)
        return bank

    network = matching_network(spec, num_classes, clip_shape)
    method = info.build(BuildContext(p, network, experts, spec.seed, spec.memory_bounded))
    groups.append(LearningRate("lr_lr", method.learnable(), p.lr_lr))  # MTT's learned lr; empty for the others
    method.to(device)
    optimizer = build_optimizer(groups, kind=info.optimiser, momentum=p.momentum)
    distiller = Distiller(
        stage=spec.stage,
        synthetic=synthetic,
        method=method,
        real=real,
        groups=groups,
        optimizer=optimizer,
        collective=collective,
        samples_per_worker=spec.samples_per_worker,
        seed=spec.seed,
        device=device,
        split=spec.split,
    )
    if info.reads_real:
        own = distiller.classes if info.real_per_class and distiller.classes is not None else range(num_classes)
        rows = real.rows_of(own)
        if should_keep_resident(len(rows), clip_shape, device) if resident is None else resident:
            real.keep_resident(rows)
    return distiller


def fit_and_write_static(spec: StageSpec, static_uri: str, fit: Callable[[StageSpec], torch.Tensor]) -> str:
    """``fit(spec)`` (the learnt images, class-major) written at ``static_uri``; returns ``static_uri``."""
    images_NCHW = fit(spec)
    labels = class_major_labels(len(open_prepared(spec.dataset_uri).classes), spec.per_class)
    about = {"dataset_uri": spec.dataset_uri, "method": spec.method, "preset": spec.preset.to_dict(), "stage": STATIC}
    write_static(static_uri, images_NCHW, labels, about)
    return static_uri


def fit_in_process(spec: StageSpec, real_indices: np.ndarray | None = None) -> torch.Tensor:
    """The stage's learnt tensors after its iterations in this process (matching only ``real_indices``)."""
    distiller = build_stage(spec, SingleProcess(), pick_device(spec.device), real_indices=real_indices)
    for iteration in range(spec.preset.iterations):
        distiller.step(iteration)
    return distiller.synthetic.values.detach().cpu()
