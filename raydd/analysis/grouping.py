"""The static/dynamic class grouping (Suppl. 9.1), and the per-class evidence to judge it by.

Per class: the test accuracy of a frame-only network (raydd's ``convnet`` probe: one random frame per
clip in training, the middle frame in testing) and of a video network (MiniC3D), both trained on the
same real training clips, and the Hamming-distance motion score of :mod:`raydd.analysis.hamming`.
Two groupings split the classes in half: by the motion score (the paper's: the lower half is static)
and by the video model's gain over the frame model (the classes a single frame already tells apart
are static). Where the dataset names its static classes (the built-in set does), each grouping's
agreement with them is the fraction of classes it puts in the same group.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence

from raydd.analysis.hamming import class_scores, train_feature_net
from raydd.analysis.study_config import AnalyseConfig
from raydd.data.reader import PreparedDataset
from raydd.devices import pick_device
from raydd.evaluation.protocols import STANDARD, lr_and_epochs
from raydd.evaluation.sources import RealClips
from raydd.evaluation.train import TrainSettings, train_and_test

STATIC, DYNAMIC = "static", "dynamic"
FRAME_MODEL, VIDEO_MODEL = "convnet", "minic3d"
DEFAULT_EPOCHS = (
    10  # on every real training clip (not a distilled set's few): the presets' 300-500 epochs would take hours on CPU
)


@dataclasses.dataclass(frozen=True)
class ClassRow:
    name: str
    frame_top1: float  # percent, mean over runs
    video_top1: float
    hamming: float  # mean fraction of feature bits flipping between consecutive frames
    hamming_group: str
    gain_group: str
    dataset_group: str | None  # the dataset's own grouping, where it has one


@dataclasses.dataclass(frozen=True)
class GroupingResult:
    rows: tuple[ClassRow, ...]
    frame_top1: tuple[float, float]  # mean, std over runs (percent, all classes)
    video_top1: tuple[float, float]
    hamming_agreement: float | None  # fraction of classes where the grouping matches the dataset's
    gain_agreement: float | None


def split_half(scores: Sequence[float]) -> list[str]:
    """The lower half (``n // 2`` lowest scores; ties by class order) static, the rest dynamic."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    low = set(order[: len(scores) // 2])
    return [STATIC if i in low else DYNAMIC for i in range(len(scores))]


def agreement(groups: Sequence[str], truth: Sequence[str | None]) -> float | None:
    if any(t is None for t in truth):
        return None
    return sum(g == t for g, t in zip(groups, truth)) / len(groups)


def _per_class(
    config: AnalyseConfig,
    dataset: PreparedDataset,
    model: str,
    train: RealClips,
    test: RealClips,
    log: Callable[[str], None],
) -> tuple[list[float], tuple[float, float]]:
    """Per-class top-1 (percent, mean over runs) and overall mean/std of ``model`` trained on ``train``."""
    preset_lr, _ = lr_and_epochs(model, STANDARD)
    clip_shape = tuple(dataset.manifest.metadata["clip_shape"])
    results = []
    for run in range(config.runs):
        settings = TrainSettings(
            model, config.epochs or DEFAULT_EPOCHS, config.lr or preset_lr, config.batch_size, seed=config.seed + run
        )
        results.append(
            train_and_test(
                settings,
                train,
                test,
                num_classes=len(dataset.classes),
                clip_shape=clip_shape,
                device=pick_device(config.device),
                run=run,
            )
        )
        log(
            f"grouping: {model} run {run + 1}/{config.runs}: "
            f"top-1 {100 * results[-1].top1:.1f} % ({results[-1].seconds:.0f} s)"
        )
    per_class = [100 * statistics.fmean(r.per_class[c] for r in results) for c in range(len(dataset.classes))]
    top1 = [100 * r.top1 for r in results]
    return per_class, (statistics.fmean(top1), statistics.pstdev(top1))


def run_grouping(config: AnalyseConfig, dataset: PreparedDataset, log: Callable[[str], None] = print) -> GroupingResult:
    device = pick_device(config.device)
    train = RealClips(dataset.split("train"), dataset.mean, dataset.std)
    test = RealClips(dataset.split("test"), dataset.mean, dataset.std)
    classes, clip_shape = dataset.classes, tuple(dataset.manifest.metadata["clip_shape"])
    log(f"grouping: training the 4-layer frame network for the Hamming score ({config.feature_epochs} epochs)")
    net = train_feature_net(
        train,
        num_classes=len(classes),
        clip_shape=clip_shape,
        epochs=config.feature_epochs,
        width=config.width,
        batch_size=config.batch_size,
        seed=config.seed,
        device=device,
    )
    hamming = class_scores(net, train, len(classes), device)
    frame, frame_top1 = _per_class(config, dataset, FRAME_MODEL, train, test, log)
    video, video_top1 = _per_class(config, dataset, VIDEO_MODEL, train, test, log)
    by_hamming, by_gain = split_half(hamming), split_half([v - f for v, f in zip(video, frame)])
    static = set(dataset.spec.static_classes)
    truth = [(STATIC if name in static else DYNAMIC) if static else None for name in classes]
    rows = tuple(ClassRow(*values) for values in zip(classes, frame, video, hamming, by_hamming, by_gain, truth))
    return GroupingResult(rows, frame_top1, video_top1, agreement(by_hamming, truth), agreement(by_gain, truth))
