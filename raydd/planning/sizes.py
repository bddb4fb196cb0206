"""How big a dataset is: from its manifest when it is prepared, else from the dataset's published size."""

from __future__ import annotations

import dataclasses
import math
from typing import NoReturn

from raydd.data.shards import DATASET_KIND
from raydd.data.specs import get_spec
from raydd.storage import manifest_or_none, resolve


@dataclasses.dataclass(frozen=True)
class DatasetSize:
    name: str
    classes: int
    train_clips: int
    test_clips: int
    clip_shape: tuple[int, int, int, int]  # (T, H, W, C)
    train_bytes: int  # the train split's shards
    test_bytes: int
    train_per_class_max: int  # clips of the largest class (what one class's rows cost)
    source: str  # where the numbers come from

    @property
    def clip_bytes(self) -> int:
        return math.prod(self.clip_shape)

    @property
    def clip_values(self) -> int:
        return math.prod(self.clip_shape)


# Published sizes of the datasets raydd knows, for a plan made before `prepare` (train clips, test clips, classes).
NOMINAL: dict[str, tuple[int, int, int, str]] = {
    "k400": (
        240_000,
        20_000,
        400,
        "Kinetics-400 (Kay et al. 2017): ~246k train / 20k val clips, ~240k train still downloadable",
    ),
    "ssv2": (
        168_913,
        24_777,
        174,
        "Something-Something V2 (Goyal et al. 2017): 168,913 train / 24,777 validation clips",
    ),
    "miniucf": (
        4_700,
        1_850,
        50,
        "MiniUCF: the 50 classes of Suppl. Tab. 6 in UCF101 split 1 (9,537 train / 3,783 test over 101 classes)",
    ),
    "ucf101": (9_537, 3_783, 101, "UCF101 split 1 (Soomro et al. 2012): 9,537 train / 3,783 test clips"),
    "hmdb51": (3_570, 1_530, 51, "HMDB51 split 1 (Kuehne et al. 2011): 70 train / 30 test clips per class"),
}
# Arrow's framing of a shard (schema, footer, padding) is a few kB a shard: below 0.1 % at shard sizes.
SHARD_OVERHEAD = 1.001


def dataset_size(store: str, name: str) -> DatasetSize:
    """The manifest's counts when STORE/datasets/NAME is prepared, else the nominal ones (or the spec's, for
    datasets defined by their generator such as builtin)."""
    location = resolve(store).child("datasets", name)
    manifest = manifest_or_none(location)
    if manifest is not None and manifest.kind == DATASET_KIND:
        meta = manifest.metadata
        train_counts = list(meta["class_counts"].get("train", {}).values())
        return DatasetSize(
            name=name,
            classes=len(meta["classes"]),
            train_clips=sum(train_counts),
            test_clips=sum(meta["class_counts"].get("test", {}).values()),
            clip_shape=tuple(meta["clip_shape"]),
            train_bytes=sum(s.bytes for s in manifest.group("train")),
            test_bytes=sum(s.bytes for s in manifest.group("test")),
            train_per_class_max=max(train_counts, default=0),
            source=f"manifest {location.child('manifest.json')}",
        )
    spec = get_spec(name)
    if name in NOMINAL:
        train, test, classes, source = NOMINAL[name]
        source = f"nominal (not prepared at {location}): {source}"
    elif spec.train_per_class:
        classes = len(spec.classes)
        train, test, source = (
            classes * spec.train_per_class,
            classes * spec.test_per_class,
            f"the {name} spec (not prepared at {location})",
        )
    else:
        raise_unknown(name, location.uri)
    clip_bytes = spec.clip_bytes
    return DatasetSize(
        name=name,
        classes=classes,
        train_clips=train,
        test_clips=test,
        clip_shape=spec.clip_shape,
        train_bytes=int(train * clip_bytes * SHARD_OVERHEAD),
        test_bytes=int(test * clip_bytes * SHARD_OVERHEAD),
        train_per_class_max=math.ceil(train / classes),
        source=source,
    )


def raise_unknown(name: str, uri: str) -> NoReturn:
    from raydd.errors import RayddError

    raise RayddError(
        f"{name} has no published size and is not prepared at {uri}: "
        f"prepare it first (`python -m raydd.prepare --dataset {name}`), then --plan"
    )
