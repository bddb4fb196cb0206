"""Raw dataset layouts: turn a source folder (any fsspec URI) into a list of clips with labels and splits.

Nothing here decodes video; it reads annotation files and lists the source once, so every mistake
(missing folder, unexpected layout, a class with no clips) is reported before anything is written.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
from collections.abc import Callable, Iterable

from raydd.data.source_files import (
    VIDEO_EXTENSIONS,
    file_stem,
    find_files,
    is_folder,
    read_text,
    require_file,
    text_files,
    video_files,
)
from raydd.data.specs import DatasetSpec
from raydd.errors import RayddError
from raydd.storage import Location, storage_errors

TRAIN, TEST = "train", "test"
SPLITS = (TRAIN, TEST)


@dataclasses.dataclass(frozen=True)
class ClipRef:
    """One raw clip: where it is (an fsspec path, or ``builtin:<label>:<index>``), its label and split."""

    source: str
    label: int
    split: str


@dataclasses.dataclass(frozen=True)
class ClipIndex:
    """Everything a source provides: the class names (label = position) and the clips found."""

    classes: tuple[str, ...]
    clips: tuple[ClipRef, ...]
    missing: tuple[str, ...] = ()  # annotated clips whose video file is absent (common for Kinetics)

    def count(self, split: str, label: int) -> int:
        return sum(1 for clip in self.clips if clip.split == split and clip.label == label)


def index_source(spec: DatasetSpec, source: Location | None) -> ClipIndex:
    """List the clips of ``spec`` in ``source`` and check that every class has training clips."""
    if spec.needs_source:
        if source is None:
            raise RayddError(f"dataset {spec.name!r} needs --source: the folder or URI holding its raw videos")
        with storage_errors(source):
            if not source.fs.isdir(source.path):
                raise RayddError(
                    f"source {source} does not exist or is not a folder: pass the folder holding the {spec.name} videos"
                )
    find_files.cache_clear()  # list the source once per index, never reuse a listing across runs
    index = _LAYOUTS[spec.layout](spec, source)
    find_files.cache_clear()
    _check_index(spec, index, source)
    return index


def _check_index(spec: DatasetSpec, index: ClipIndex, source: Location | None) -> None:
    for label, name in enumerate(index.classes):
        if index.count(TRAIN, label) == 0:
            where = f" in {source}" if source is not None else ""
            raise RayddError(
                f"class {name!r} of {spec.name} has no training clips{where}: add its videos or remove the class"
            )
    if not any(clip.split == TEST for clip in index.clips):
        raise RayddError(
            f"{spec.name} at {source} has no test clips: check the split files (or --test-fraction for folder)"
        )


# ---------------------------------------------------------------------------------------------- builtin


def _builtin(spec: DatasetSpec, source: Location | None) -> ClipIndex:
    clips = [
        ClipRef(source=f"builtin:{label}:{split}:{index}", label=label, split=split)
        for split, per_class in ((TRAIN, spec.train_per_class), (TEST, spec.test_per_class))
        for label in range(len(spec.classes))
        for index in range(per_class)
    ]
    return ClipIndex(classes=spec.classes, clips=tuple(clips))


# ----------------------------------------------------------------------------------------------- folder


def _folder(spec: DatasetSpec, source: Location | None) -> ClipIndex:
    assert source is not None
    with storage_errors(source):
        entries = source.fs.ls(source.path, detail=True)
        class_dirs = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if is_folder(source, e))
    class_dirs = [name for name in class_dirs if not name.startswith(".")]
    if not class_dirs:
        raise RayddError(f"{source} has no class sub-folders: the folder layout is SOURCE/<class>/<video files>")
    files = video_files(source)
    clips: list[ClipRef] = []
    for label, name in enumerate(class_dirs):
        videos = sorted(path for relative, path in files.items() if relative.startswith(name.lower() + "/"))
        if not videos:
            raise RayddError(
                f"class folder {source}/{name} has no videos ({', '.join(sorted(VIDEO_EXTENSIONS))}): add some or "
                "remove the folder"
            )
        random.Random(f"{spec.seed}:{name}").shuffle(videos)
        n_test = min(round(len(videos) * spec.test_fraction), len(videos) - 1)
        clips += [ClipRef(path, label, TEST if i < n_test else TRAIN) for i, path in enumerate(videos)]
    return ClipIndex(classes=tuple(class_dirs), clips=tuple(clips))


# ----------------------------------------------------------------------------------------------- ucf101


def _ucf101(spec: DatasetSpec, source: Location | None) -> ClipIndex:
    assert source is not None
    lists = text_files(source, ".txt")
    class_lines = read_text(source, require_file(lists, "classInd.txt", spec, source)).split()
    all_classes = tuple(class_lines[1::2])  # "1 ApplyEyeMakeup" pairs
    classes = spec.classes or all_classes
    unknown = sorted(set(classes) - set(all_classes))
    if unknown:
        raise RayddError(f"classInd.txt in {source} lacks classes {unknown[:5]} of {spec.name}: is this UCF101?")
    label_of = {name.lower(): label for label, name in enumerate(classes)}
    files = video_files(source)
    clips, missing = [], []
    for split, list_name in ((TRAIN, f"trainlist0{spec.split}.txt"), (TEST, f"testlist0{spec.split}.txt")):
        for line in read_text(source, require_file(lists, list_name, spec, source)).splitlines():
            if not line.strip():
                continue
            entry = line.split()[0]  # as listed: reported with its case, looked up without
            relative = entry.lower()
            label = label_of.get(relative.split("/", 1)[0])
            if label is None:
                continue
            path = files.get(relative) or files.get("ucf-101/" + relative)
            if path is None:
                missing.append(entry)
            else:
                clips.append(ClipRef(path, label, split))
    return ClipIndex(classes=classes, clips=tuple(clips), missing=tuple(missing))


# ----------------------------------------------------------------------------------------------- hmdb51


def _hmdb51(spec: DatasetSpec, source: Location | None) -> ClipIndex:
    assert source is not None
    suffix = f"_test_split{spec.split}.txt"
    split_files = text_files(source, suffix)
    if not split_files:
        raise RayddError(f"no *{suffix} files in {source}: unpack HMDB51's testTrainMulti_7030_splits there")
    classes = tuple(sorted(name[: -len(suffix)] for name in split_files))
    by_name = {relative.rsplit("/", 1)[-1]: path for relative, path in video_files(source).items()}
    clips, missing = [], []
    for label, name in enumerate(classes):
        for line in read_text(source, split_files[name + suffix]).splitlines():
            parts = line.split()
            if len(parts) != 2 or parts[1] not in {"1", "2"}:
                continue  # 0 = not used in this split
            path = by_name.get(parts[0].lower())
            if path is None:
                missing.append(parts[0])
            else:
                clips.append(ClipRef(path, label, TRAIN if parts[1] == "1" else TEST))
    return ClipIndex(classes=classes, clips=tuple(clips), missing=tuple(missing))


# ------------------------------------------------------------------------------------------------- k400


def _k400(spec: DatasetSpec, source: Location | None) -> ClipIndex:
    assert source is not None
    tables = text_files(source, ".csv")
    train_rows = _csv_rows(source, require_file(tables, "train.csv", spec, source), spec)
    test_name = "val.csv" if "val.csv" in tables else "validate.csv"
    if test_name not in tables:  # name the file the description promises, not only its alias
        raise RayddError(
            f"{spec.name} source {source} has no val.csv (or validate.csv): expected the layout '{spec.description}'"
        )
    test_rows = _csv_rows(source, require_file(tables, test_name, spec, source), spec)
    classes = tuple(sorted({row["label"] for row in train_rows}))
    label_of = {name: label for label, name in enumerate(classes)}
    by_stem = {file_stem(relative): path for relative, path in video_files(source).items()}
    clips, missing = [], []
    for split, rows in ((TRAIN, train_rows), (TEST, test_rows)):
        for row in rows:
            if row["label"] not in label_of:
                continue
            # YouTube ids are case-sensitive: report a missing clip as annotated, look files up without case
            stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
            path = by_stem.get(stem.lower()) or by_stem.get(row["youtube_id"].lower())
            if path is None:
                missing.append(stem)
            else:
                clips.append(ClipRef(path, label_of[row["label"]], split))
    return ClipIndex(classes=classes, clips=tuple(clips), missing=tuple(missing))


def _csv_rows(source: Location, path: str, spec: DatasetSpec) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(read_text(source, path))))
    needed = {"label", "youtube_id", "time_start", "time_end"}
    if not rows or not needed <= set(rows[0]):
        raise RayddError(f"{path} is not a Kinetics annotation CSV: expected columns {', '.join(sorted(needed))}")
    return rows


# ------------------------------------------------------------------------------------------------- ssv2


def _ssv2(spec: DatasetSpec, source: Location | None) -> ClipIndex:
    assert source is not None
    labels = text_files(source, ".json")
    label_names = _json(source, require_file(labels, "labels.json", spec, source))
    classes = tuple(name for name, _ in sorted(label_names.items(), key=lambda item: int(item[1])))
    label_of = {name: label for label, name in enumerate(classes)}
    by_stem = {file_stem(relative): path for relative, path in video_files(source).items()}
    clips, missing = [], []
    for split, name in ((TRAIN, "train.json"), (TEST, "validation.json")):
        for entry in _json(source, require_file(labels, name, spec, source)):
            template = entry["template"].replace("[", "").replace("]", "")
            if template not in label_of:
                raise RayddError(f"{name} in {source} uses template {template!r} that labels.json does not list")
            path = by_stem.get(str(entry["id"]).lower())
            if path is None:
                missing.append(str(entry["id"]))
            else:
                clips.append(ClipRef(path, label_of[template], split))
    return ClipIndex(classes=classes, clips=tuple(clips), missing=tuple(missing))


def _json(source: Location, path: str):  # noqa: ANN202 - JSON of either shape
    try:
        return json.loads(read_text(source, path))
    except json.JSONDecodeError as error:
        raise RayddError(f"{path} is not valid JSON ({error}): re-download the Something-Something V2 labels") from None


_LAYOUTS: dict[str, Callable[[DatasetSpec, Location | None], ClipIndex]] = {
    "builtin": _builtin,
    "folder": _folder,
    "ucf101": _ucf101,
    "hmdb51": _hmdb51,
    "k400": _k400,
    "ssv2": _ssv2,
}


def layouts() -> Iterable[str]:
    return tuple(_LAYOUTS)
