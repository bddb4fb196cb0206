"""The configuration of ``python -m raydd.analyse``: one frozen dataclass, one flag per field."""

from __future__ import annotations

import dataclasses

from raydd.config import DeviceSection, SeedSection, StoreSection, TrackingSection, check, option
from raydd.devices import DEVICE_CHOICES
from raydd.layout import StoreLayout, default_store

TEMPORAL, GROUPING = "temporal", "grouping"
STUDIES = (TEMPORAL, GROUPING)
VIDEO_MODELS = ("cnn_gru", "cnn_lstm", "minic3d")


@dataclasses.dataclass(frozen=True)
class AnalyseConfig(StoreSection, TrackingSection, DeviceSection, SeedSection):
    study: str = option(
        TEMPORAL,
        "temporal: accuracy, time and memory against synthetic frames (paper Sec. 3.3); "
        "grouping: static/dynamic classes (Suppl. 9.1)",
        choices=STUDIES,
    )
    data: str | None = option(None, "prepared dataset (STORE/datasets/NAME; default: STORE/datasets/builtin)")
    runs: int = option(5, "evaluation runs (seeds) per trained model; tables give mean ± std")
    epochs: int | None = option(
        None, "training epochs of each evaluated model (default: temporal the evaluation preset's, grouping 10)"
    )
    lr: float | None = option(None, "SGD lr of each evaluated model (default: the evaluation preset's)")
    seed: int = option(0, "seed of run 0; run i uses seed + i")
    frames: str = option("all", "temporal: synthetic frame counts, comma-separated (all: 1, 2, 4, ... up to T, and T)")
    model: str = option(
        "cnn_gru", "temporal: matching and evaluation network (the paper's CNN+GRU)", choices=VIDEO_MODELS
    )
    ipc: int = option(1, "temporal: synthetic videos per class")
    iterations: int = option(100, "temporal: DM iterations per frame count")
    lr_img: float = option(100.0, "temporal: SGD lr of the synthetic videos")
    momentum: float = option(0.5, "temporal: SGD momentum of the synthetic videos")
    batch_real: int = option(16, "temporal: real clips per class per DM iteration")
    width: int = option(32, "temporal: matching network width (CNN widths w/2, w, w; recurrent state 2w)")
    batch_size: int = option(16, "grouping: training batch size on the real clips")
    feature_epochs: int = option(
        10, "grouping: epochs of the 4-layer frame ConvNet whose frozen features are hashed (0: random features)"
    )
    device: str = option("auto", "device of every step", choices=DEVICE_CHOICES)
    experiment: str = option("raydd-analyse", "MLflow experiment name")

    def __post_init__(self) -> None:
        for name in ("runs", "ipc", "iterations", "batch_real", "width", "batch_size"):
            check(getattr(self, name) >= 1, name, "a positive integer")
        check(self.epochs is None or self.epochs >= 1, "epochs", "a positive integer")
        check(self.lr is None or self.lr > 0, "lr", "a positive number")
        check(self.lr_img > 0, "lr_img", "a positive number")
        check(self.feature_epochs >= 0, "feature_epochs", "0 (random features) or a positive integer")
        check(
            self.frames == "all" or all(p.strip().isdigit() for p in self.frames.split(",")),
            "frames",
            "all or comma-separated positive integers, e.g. 1,2,4,8",
        )

    def with_store_defaults(self) -> AnalyseConfig:
        """The store (:func:`~raydd.layout.default_store`) and ``--data`` (its built-in dataset), resolved now."""
        store = self.store or default_store()
        return dataclasses.replace(self, store=store, data=self.data or StoreLayout.of(store).dataset("builtin").uri)
