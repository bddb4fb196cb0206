"""One evaluation run, self-contained so that it can run as a Ray task anywhere in the cluster.

The task opens the data itself (memory-mapped or fetched from the store), so nothing large travels
through the object store.
"""

from __future__ import annotations

import dataclasses

from raydd.classes import random_per_class
from raydd.console import logger
from raydd.data.reader import open_prepared
from raydd.devices import configure_cuda, pick_device
from raydd.distilled_set import STATIC_DYNAMIC, load_distilled, load_static_dynamic
from raydd.evaluation.protocols import PROTOCOL, Protocol
from raydd.evaluation.sources import BatchSource, RealClips, RepairedStaticDynamic, TensorClips
from raydd.evaluation.train import RunResult, TrainSettings, train_and_test
from raydd.storage import read_manifest, resolve

REAL, RANDOM_REAL, DISTILLED, STILLS_ONLY = "real", "random-real", "distilled", "stills-only"


@dataclasses.dataclass(frozen=True)
class RunTask:
    run: int
    settings: TrainSettings
    kind: str  # REAL, RANDOM_REAL or DISTILLED
    data_uri: str
    test_uri: str
    random_ipc: int = 0
    device: str = "auto"


def execute(task: RunTask, protocol: Protocol | None = None) -> RunResult:
    """Build the training set of ``task``, train a fresh model, score it on the real test split. ``protocol``
    replaces raydd's :data:`~raydd.evaluation.protocols.PROTOCOL` (``benchmarks/protocol_ablation.py`` varies one
    part of it at a time)."""
    device = pick_device(task.device)
    configure_cuda(device, fixed_shapes=False)  # a last, smaller batch per epoch
    protocol = protocol or PROTOCOL
    reference = open_prepared(task.test_uri)
    test = RealClips(reference.split("test"), reference.mean, reference.std)
    train = training_set(task, reference.mean, reference.std, len(reference.classes), protocol)
    passes = protocol.passes(task.settings.epochs)
    log = logger(__name__)

    def report(epoch: int, loss: float) -> None:  # every epoch's loss also reaches MLflow, from the driver
        log.debug("[run %d] epoch %d/%d train loss %.4f", task.run, epoch + 1, passes, loss)

    return train_and_test(
        task.settings,
        train,
        test,
        num_classes=len(reference.classes),
        clip_shape=tuple(reference.manifest.metadata["clip_shape"]),
        device=device,
        run=task.run,
        on_epoch=report,
        protocol=protocol,
    )


def training_set(
    task: RunTask,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    num_classes: int,
    protocol: Protocol | None = None,
) -> BatchSource:
    """What ``task`` trains on, as ``protocol`` (default: raydd's) presents it."""
    protocol = protocol or PROTOCOL
    if task.kind == STILLS_ONLY:
        return TensorClips(*load_static_dynamic(task.data_uri).still_videos())
    if task.kind == DISTILLED:
        representation = read_manifest(resolve(task.data_uri)).metadata.get("representation")
        if representation == STATIC_DYNAMIC and protocol.repair_static_dynamic:
            return RepairedStaticDynamic(load_static_dynamic(task.data_uri), seed=task.settings.seed)
        distilled = load_distilled(task.data_uri)
        return TensorClips(distilled.videos_NCTHW, distilled.labels)
    source = open_prepared(task.data_uri)
    videos = source.split("train")
    chosen = None
    if task.kind == RANDOM_REAL:
        chosen = random_per_class(videos.labels, task.random_ipc, num_classes, task.settings.seed)
    return RealClips(videos, mean, std, chosen)
