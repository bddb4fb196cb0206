"""The dataset registry: one :class:`DatasetSpec` per dataset raydd knows.

A spec says what a prepared dataset looks like (classes, frames per clip, resolution) and how the raw
files are laid out (``layout``, resolved in :mod:`raydd.data.layouts`). Adding a dataset is a new
entry here, not a new code path.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from raydd.errors import RayddError

# Suppl. Tab. 6 of the paper: the 50 UCF101 classes of MiniUCF (the 50 best MiniC3D classes on split 1).
MINIUCF_CLASSES: tuple[str, ...] = (
    "ApplyEyeMakeup",
    "BalanceBeam",
    "BandMarching",
    "BaseballPitch",
    "Basketball",
    "BasketballDunk",
    "Biking",
    "Billiards",
    "BlowingCandles",
    "Bowling",
    "BreastStroke",
    "CleanAndJerk",
    "CliffDiving",
    "CricketShot",
    "Diving",
    "FloorGymnastics",
    "FrisbeeCatch",
    "GolfSwing",
    "HammerThrow",
    "HighJump",
    "HorseRace",
    "HorseRiding",
    "HulaHoop",
    "IceDancing",
    "JumpingJack",
    "Knitting",
    "MilitaryParade",
    "Mixing",
    "ParallelBars",
    "PlayingPiano",
    "PlayingViolin",
    "PoleVault",
    "PommelHorse",
    "Punch",
    "Rafting",
    "Rowing",
    "SkateBoarding",
    "Skiing",
    "Skijet",
    "SkyDiving",
    "SoccerPenalty",
    "StillRings",
    "SumoWrestling",
    "Surfing",
    "Swing",
    "TennisSwing",
    "TrampolineJumping",
    "UnevenBars",
    "VolleyballSpiking",
    "WritingOnBoard",
)

# The built-in dataset: five classes told apart only by appearance, five only by motion
# (see raydd.data.builtin for how each is drawn).
BUILTIN_STATIC_CLASSES: tuple[str, ...] = ("red-disk", "green-square", "blue-ring", "yellow-cross", "cyan-bar")
BUILTIN_DYNAMIC_CLASSES: tuple[str, ...] = ("move-right", "move-left", "move-up", "move-down", "move-right-fast")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a prepared dataset holds and where its raw files come from.

    ``classes`` empty means the class list is read from the source (annotation files or folders);
    otherwise it is fixed and a source must provide every one of them.
    """

    name: str
    layout: str
    num_frames: int
    height: int
    width: int
    classes: tuple[str, ...] = ()
    split: int = 1
    test_fraction: float = 0.3
    seed: int = 0
    train_per_class: int = 0
    test_per_class: int = 0
    static_classes: tuple[str, ...] = ()
    description: str = ""

    @property
    def needs_source(self) -> bool:
        return self.layout != "builtin"

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(T, H, W, C) of one prepared clip."""
        return (self.num_frames, self.height, self.width, 3)

    @property
    def clip_bytes(self) -> int:
        t, h, w, c = self.clip_shape
        return t * h * w * c

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DatasetSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields}
        return cls(**values)


_REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="builtin",
            layout="builtin",
            num_frames=8,
            height=32,
            width=32,
            classes=BUILTIN_STATIC_CLASSES + BUILTIN_DYNAMIC_CLASSES,
            static_classes=BUILTIN_STATIC_CLASSES,
            train_per_class=30,
            test_per_class=20,
            description="generated from a seed, no download: 5 appearance-only + 5 motion-only classes",
        ),
        DatasetSpec(
            name="folder",
            layout="folder",
            num_frames=16,
            height=112,
            width=112,
            description="SOURCE/<class>/<video>, split per class by a seeded --test-fraction",
        ),
        DatasetSpec(
            name="ucf101",
            layout="ucf101",
            num_frames=16,
            height=112,
            width=112,
            description="UCF101: <class>/v_*.avi (optionally under UCF-101/) + ucfTrainTestlist/, official split",
        ),
        DatasetSpec(
            name="miniucf",
            layout="ucf101",
            num_frames=16,
            height=112,
            width=112,
            classes=MINIUCF_CLASSES,
            description="the 50 UCF101 classes of Suppl. Tab. 6, UCF101 layout, official split",
        ),
        DatasetSpec(
            name="hmdb51",
            layout="hmdb51",
            num_frames=16,
            height=112,
            width=112,
            description="HMDB51: <class>/*.avi + *_test_split<N>.txt files, official split",
        ),
        DatasetSpec(
            name="k400",
            layout="k400",
            num_frames=8,
            height=64,
            width=64,
            description="Kinetics-400: train.csv/val.csv annotations + <youtube_id>_<start>_<end>.mp4 files; "
            "val is the test split",
        ),
        DatasetSpec(
            name="ssv2",
            layout="ssv2",
            num_frames=8,
            height=64,
            width=64,
            description="Something-Something V2: labels.json/train.json/validation.json + <id>.webm; "
            "validation is the test split",
        ),
    )
}


def dataset_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The registered spec called ``name``; an unknown name is a one-line error listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RayddError(f"unknown dataset {name!r}: use one of {', '.join(_REGISTRY)}") from None
