"""One evaluation run, self-contained so that it can run as a Ray task anywhere in the cluster.

The task opens the data itself (memory-mapped or fetched from the store), so nothing large travels
through the object store.
"""

from __future__ import annotations

import dataclasses

from raydd.data.reader import open_prepared
from raydd.devices import pick_device
from raydd.distilled_set import load_distilled
from raydd.evaluation.sources import RealClips, TensorClips, random_per_class
from raydd.evaluation.train import RunResult, TrainSettings, train_and_test

REAL, RANDOM_REAL, DISTILLED = "real", "random-real", "distilled"


@dataclasses.dataclass(frozen=True)
class RunTask:
    run: int
    settings: TrainSettings
    kind: str  # REAL, RANDOM_REAL or DISTILLED
    data_uri: str
    test_uri: str
    random_ipc: int = 0
    device: str = "auto"


def execute(task: RunTask) -> RunResult:
    """Build the training set of ``task``, train a fresh model, score it on the real test split."""
    device = pick_device(task.device)
    reference = open_prepared(task.test_uri)
    test = RealClips(reference.split("test"), reference.mean, reference.std)
    if task.kind == DISTILLED:
        distilled = load_distilled(task.data_uri)
        train = TensorClips(distilled.videos_NCTHW, distilled.labels)
    else:
        source = open_prepared(task.data_uri)
        videos = source.split("train")
        chosen = random_per_class(videos.labels, task.random_ipc, len(source.classes), task.settings.seed) if task.kind == RANDOM_REAL else None
        train = RealClips(videos, reference.mean, reference.std, chosen)
    every = max(1, task.settings.epochs // 5)

    def report(epoch: int, loss: float) -> None:
        if (epoch + 1) % every == 0 or epoch + 1 == task.settings.epochs:
            print(f"[run {task.run}] epoch {epoch + 1}/{task.settings.epochs} train loss {loss:.4f}", flush=True)

    return train_and_test(
        task.settings, train, test, num_classes=len(reference.classes), clip_shape=tuple(reference.manifest.metadata["clip_shape"]),
        device=device, run=task.run, on_epoch=report,
    )  # fmt: skip
