"""Raw dataset layouts on tiny fake source trees: listing (no Ray), then ``prepare`` end to end on Ray.

Every clip's red/green colour encodes its class (tests.data.videos.class_color), so a test can tell
from decoded or prepared frames alone whether a clip got the right label.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from raydd.data import open_prepared
from raydd.data.decode import decode_clip
from raydd.data.layouts import TEST, TRAIN, ClipIndex, index_source
from raydd.data.preparation import PrepareConfig, prepare
from raydd.data.shards import read_clip_shard
from raydd.data.specs import MINIUCF_CLASSES, dataset_names, get_spec
from raydd.errors import RayddError
from raydd.storage import Manifest, resolve
from tests.data.videos import (
    TINY_FRAMES,
    class_frames,
    encode_timed_video,
    encode_video,
    folder_tree,
    hmdb51_tree,
    k400_tree,
    label_of_frames,
    miniucf_tree,
    put_garbage,
    ramp_value,
    ssv2_class_order,
    ssv2_tree,
    ucf101_tree,
)

SMALL = dict(frames=4, height=16, width=16)
UCF_CLASSES = ("ApplyEyeMakeup", "Basketball", "HandstandPushups")
UCF_MISSING = "Basketball/v_Basketball_g09_c01.avi"

# what each fake tree holds: classes, clips per split, annotated clips without a video
EXPECTED = {
    "folder": (("cat", "dog", "eel"), {TRAIN: 9, TEST: 3}, 0),
    "ucf101": (UCF_CLASSES, {TRAIN: 5, TEST: 3}, 1),
    "miniucf": (MINIUCF_CLASSES, {TRAIN: 50, TEST: 50}, 0),
    "hmdb51": (("brush_hair", "cartwheel", "kick_ball"), {TRAIN: 6, TEST: 3}, 0),
    "k400": (("abseiling", "air drumming", "passing American football (in game)"), {TRAIN: 6, TEST: 3}, 1),
    "ssv2": (ssv2_class_order(), {TRAIN: 6, TEST: 3}, 0),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {
        "folder": folder_tree(root / "folder"),
        "ucf101": ucf101_tree(root / "ucf101", UCF_CLASSES, missing=(UCF_MISSING,)),
        "miniucf": miniucf_tree(root / "miniucf"),
        "hmdb51": hmdb51_tree(root / "hmdb51"),
        "k400": k400_tree(root / "k400"),
        "ssv2": ssv2_tree(root / "ssv2"),
    }


def _index(name: str, source: Path | str, **changes) -> ClipIndex:
    return index_source(dataclasses.replace(get_spec(name), **changes), resolve(str(source)))


def _check_index(index: ClipIndex, name: str) -> None:
    """Classes, counts and missing as EXPECTED, and every clip's video shows its label's colour."""
    classes, clips, missing = EXPECTED[name]
    assert index.classes == classes
    assert {split: sum(c.split == split for c in index.clips) for split in (TRAIN, TEST)} == clips
    assert len(index.missing) == missing
    assert len({c.source for c in index.clips}) == len(index.clips)  # no clip listed twice
    for clip in index.clips:
        with open(clip.source, "rb") as handle:
            assert label_of_frames(decode_clip(handle, 2, 8, 8)) == clip.label, clip


# ----------------------------------------------------------------------------------- listing, no Ray


def test_folder_index(sources: dict[str, Path]) -> None:
    index = _index("folder", sources["folder"])
    _check_index(index, "folder")
    assert all(index.count(TRAIN, label) == 3 and index.count(TEST, label) == 1 for label in range(3))
    # hidden files and folders and non-video files are not clips
    assert not any("/." in c.source or c.source.endswith(".txt") for c in index.clips)
    # the split is seeded (the same seed gives the same split) and follows --test-fraction
    assert _index("folder", sources["folder"]) == index
    assert sum(c.split == TEST for c in _index("folder", sources["folder"], test_fraction=0.5).clips) == 6


def test_folder_index_through_a_file_uri(sources: dict[str, Path]) -> None:
    index = index_source(get_spec("folder"), resolve(f"file://{sources['folder']}"))
    assert index == _index("folder", sources["folder"])


def test_symlinked_folders_are_followed(sources: dict[str, Path], tmp_path: Path) -> None:
    """Datasets assembled from links to the real class folders; dangling links and loops are ignored."""
    linked = tmp_path / "linked"
    linked.mkdir()
    for name in ("cat", "dog"):
        (linked / name).symlink_to(sources["folder"] / name, target_is_directory=True)
    (linked / "eel").mkdir()
    for video in sorted((sources["folder"] / "eel").iterdir()):
        (linked / "eel" / video.name).symlink_to(video)
    (linked / "eel" / "gone.mp4").symlink_to(tmp_path / "no-such-video.mp4")
    (linked / "eel" / "loop").symlink_to(linked, target_is_directory=True)
    index = _index("folder", linked)
    _check_index(index, "folder")
    assert all(c.source.startswith(str(linked)) for c in index.clips)
    (tmp_path / "alias").symlink_to(linked, target_is_directory=True)  # the source itself a link
    _check_index(_index("folder", tmp_path / "alias"), "folder")
    # UCF-101 linked from elsewhere next to real list files
    ucf = tmp_path / "ucf"
    shutil.copytree(sources["ucf101"] / "ucfTrainTestlist", ucf / "ucfTrainTestlist")
    (ucf / "UCF-101").symlink_to(sources["ucf101"] / "UCF-101", target_is_directory=True)
    _check_index(_index("ucf101", ucf), "ucf101")


def test_folder_without_test_clips_is_an_error(sources: dict[str, Path]) -> None:
    with pytest.raises(RayddError, match="no test clips.*--test-fraction"):
        _index("folder", sources["folder"], test_fraction=0.0)


def test_ucf101_index(sources: dict[str, Path]) -> None:
    index = _index("ucf101", sources["ucf101"])
    _check_index(index, "ucf101")
    # official split 1: groups 8-25 train, 1-7 test; the missing clip is reported as listed
    assert all("_g08_" in c.source or "_g09_" in c.source for c in index.clips if c.split == TRAIN)
    assert all("_g01_" in c.source for c in index.clips if c.split == TEST)
    assert index.missing == (UCF_MISSING,)
    # HandstandPushups' folder is spelt HandStandPushups on disk: still found
    assert index.count(TRAIN, 2) == 2 and index.count(TEST, 2) == 1
    assert index.count(TRAIN, 1) == 1  # Basketball lost its missing clip


def test_miniucf_index_keeps_exactly_the_50_classes(sources: dict[str, Path]) -> None:
    index = _index("miniucf", sources["miniucf"])
    _check_index(index, "miniucf")  # labels are positions in MINIUCF_CLASSES, not classInd numbers
    assert not any("Archery" in c.source or "YoYo" in c.source for c in index.clips)
    # the same tree read as full UCF101 has all 52 classes, numbered in classInd order
    full = _index("ucf101", sources["miniucf"])
    assert len(full.classes) == 52 and full.classes == tuple(sorted(full.classes))


def test_miniucf_lacking_a_class_is_an_error(sources: dict[str, Path], tmp_path: Path) -> None:
    source = shutil.copytree(sources["ucf101"], tmp_path / "ucf101")
    with pytest.raises(RayddError, match=r"classInd.txt .* lacks classes .*BalanceBeam"):
        _index("miniucf", source)


def test_hmdb51_index(sources: dict[str, Path]) -> None:
    index = _index("hmdb51", sources["hmdb51"])
    _check_index(index, "hmdb51")
    names = {c.source.rsplit("/", 1)[-1]: c.split for c in index.clips}
    assert not any(name.startswith("unused_") for name in names)  # "0": not in this split
    assert all(split == TEST for name, split in names.items() if name.startswith("#20_Rhythm"))
    assert any(name.startswith("Prelinger_[HD]") for name in names)
    # split 2's files are read for split 2 (everything is train there, so there is no test split)
    with pytest.raises(RayddError, match="no test clips"):
        _index("hmdb51", sources["hmdb51"], split=2)


def test_k400_index(sources: dict[str, Path]) -> None:
    index = _index("k400", sources["k400"])
    _check_index(index, "k400")
    assert all("/train/" in c.source for c in index.clips if c.split == TRAIN)
    assert all("/val/" in c.source for c in index.clips if c.split == TEST)
    assert index.missing == ("tr0x2-AbC__000023_000033",)  # as annotated: YouTube ids are case-sensitive
    assert not any("zzOnlyVal01".lower() in c.source.lower() for c in index.clips)  # class not in train.csv


def test_ssv2_index(sources: dict[str, Path]) -> None:
    index = _index("ssv2", sources["ssv2"])
    _check_index(index, "ssv2")  # labels follow labels.json's numbering, not file order
    assert all(c.source.endswith(".webm") for c in index.clips)


# ------------------------------------------------------------------------------ prepare end to end


class Store:
    """One store shared by the module; each dataset is prepared into it once, on first use."""

    def __init__(self, root: Path, sources: dict[str, Path]) -> None:
        self.root, self.sources, self.manifests = root, sources, {}

    def prepared(self, name: str) -> Manifest:
        if name not in self.manifests:
            # several shards for the folder dataset, so labels must line up across shards
            shard_mb = 0.01 if name == "folder" else 256.0
            self.manifests[name] = prepare(
                PrepareConfig(
                    dataset=name, source=str(self.sources[name]), store=str(self.root), shard_mb=shard_mb, **SMALL
                )
            )
        return self.manifests[name]

    def uri(self, name: str) -> str:
        return str(self.root / "datasets" / name)

    def manifest_bytes(self) -> dict[str, bytes]:
        return {p.parent.name: p.read_bytes() for p in sorted((self.root / "datasets").glob("*/manifest.json"))}


@pytest.fixture(scope="module")
def store(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory, sources: dict[str, Path]) -> Store:
    return Store(tmp_path_factory.mktemp("store"), sources)


def _check_prepared_split(uri: str, split: str, count: int, n_classes: int) -> None:
    videos = open_prepared(uri).split(split, verify=True)
    assert len(videos) == count
    frames, labels = videos.batch(np.arange(count))
    assert tuple(frames.shape) == (count, 4, 16, 16, 3) and str(frames.dtype) == "torch.uint8"
    frames = frames.numpy()
    assert [label_of_frames(clip) for clip in frames] == labels.tolist()
    assert set(labels.tolist()) <= set(range(n_classes))
    # 4 of the 8 source frames, sampled uniformly (frames 1, 3, 5, 7): blue grows along the clip
    expected_blue = [ramp_value(t, TINY_FRAMES, 30, 220) for t in (1, 3, 5, 7)]
    np.testing.assert_allclose(frames[..., 2].mean(axis=(2, 3)), np.tile(expected_blue, (count, 1)), atol=8)
    one_frames, one_label = videos[count - 1]
    assert tuple(one_frames.shape) == (4, 16, 16, 3) and one_label == labels[-1]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_prepare_end_to_end(store: Store, name: str) -> None:
    classes, clips, missing = EXPECTED[name]
    manifest = store.prepared(name)
    meta = manifest.metadata
    assert meta["classes"] == list(classes)
    assert meta["clips"] == clips
    assert meta["clip_shape"] == [4, 16, 16, 3]
    assert meta["spec"]["num_frames"] == 4 and meta["spec"]["height"] == 16 and meta["spec"]["width"] == 16
    assert meta["skipped"] == {"count": 0, "files": []}
    assert meta["missing"]["count"] == missing
    assert sum(meta["class_counts"][TRAIN].values()) == clips[TRAIN]
    assert all(count >= 1 for count in meta["class_counts"][TRAIN].values())
    assert {shard.group for shard in manifest.shards} == {TRAIN, TEST}
    for split, count in clips.items():
        _check_prepared_split(store.uri(name), split, count, len(classes))
    opened = open_prepared(store.uri(name))
    assert opened.classes == classes and len(opened.mean) == 3


def test_k400_missing_clip_is_named_in_the_manifest(store: Store) -> None:
    missing = store.prepared("k400").metadata["missing"]
    assert missing == {"count": 1, "examples": ["tr0x2-AbC__000023_000033"]}


# ------------------------------------------------------------------------------------- bad videos


def _tree_with_bad_videos(sources: dict[str, Path], target: Path) -> tuple[Path, set[str]]:
    """The folder tree plus a file of random bytes (dog) and an avi cut to half its bytes (eel)."""
    source = shutil.copytree(sources["folder"], target)
    garbage = put_garbage(source / "dog" / "zz-garbage.mp4")
    whole = encode_video(np.random.default_rng(3).integers(0, 256, (16, 48, 64, 3), dtype=np.uint8), "avi")
    truncated = source / "eel" / "truncated.avi"
    truncated.write_bytes(whole[: len(whole) // 2])
    return source, {str(garbage), str(truncated)}


def test_corrupt_videos_are_skipped_named_and_counted(
    ray_cluster: None, sources: dict[str, Path], tmp_path: Path
) -> None:
    source, bad = _tree_with_bad_videos(sources, tmp_path / "source")
    config = PrepareConfig(
        dataset="folder", source=str(source), store=str(tmp_path / "store"), max_bad_fraction=0.2, **SMALL
    )
    manifest = prepare(config)
    skipped = manifest.metadata["skipped"]
    assert skipped["count"] == 2
    assert {entry["source"] for entry in skipped["files"]} == bad
    assert all(entry["reason"] for entry in skipped["files"])
    counts = manifest.metadata["clips"]
    assert counts[TRAIN] + counts[TEST] == 12  # 14 listed, 2 skipped
    assert sum(shard.rows for shard in manifest.shards) == 12
    for split, count in counts.items():
        _check_prepared_split(str(tmp_path / "store" / "datasets" / "folder"), split, count, 3)


def test_variable_frame_rate_video_is_prepared_and_a_truncated_one_named(
    ray_cluster: None, sources: dict[str, Path], tmp_path: Path
) -> None:
    """15 frames at irregular times over 2 s (24 fps would be 48 frames) are a valid clip, sampled by time; the same
    kind of file cut to half its bytes ends well before the 2 s its container states and is skipped, by name."""
    source = shutil.copytree(sources["folder"], tmp_path / "source")
    shown_ms = [0, 42, 83, 125, 500, 542, 583, 1000, 1042, 1500, 1542, 1583, 1625, 1917, 1958]
    vfr = source / "dog" / "vfr.mkv"
    vfr.write_bytes(encode_timed_video(class_frames(1, len(shown_ms)), shown_ms, "mkv", "ffv1"))
    noise = np.random.default_rng(5).integers(0, 256, (len(shown_ms), 48, 64, 3), dtype=np.uint8)
    whole = encode_timed_video(noise, shown_ms, "webm", "libvpx-vp9")
    cut = source / "eel" / "cut-vfr.webm"
    cut.write_bytes(whole[: len(whole) // 2])
    store = str(tmp_path / "store")
    manifest = prepare(PrepareConfig(dataset="folder", source=str(source), store=store, max_bad_fraction=0.2, **SMALL))
    [entry] = manifest.metadata["skipped"]["files"]
    assert entry["source"] == str(cut) and "truncated" in entry["reason"]
    assert manifest.metadata["clips"][TRAIN] + manifest.metadata["clips"][TEST] == 13  # 12 + the valid one
    dataset = resolve(str(tmp_path / "store" / "datasets" / "folder"))
    shards = [read_clip_shard(dataset.child(shard.name)) for shard in manifest.shards]
    [clip] = [s.frames_NTHWC[n] for s in shards for n, name in enumerate(s.sources) if name.endswith("vfr.mkv")]
    assert label_of_frames(clip) == 1
    # the frames on screen at 250, 750, 1250 and 1750 ms: frames 3, 6, 8 and 12 of 15
    expected_blue = [ramp_value(t, len(shown_ms), 30, 220) for t in (3, 6, 8, 12)]
    np.testing.assert_allclose(clip[..., 2].mean(axis=(1, 2)), expected_blue, atol=8)


def test_too_many_bad_videos_raise_and_publish_nothing(
    ray_cluster: None, sources: dict[str, Path], tmp_path: Path
) -> None:
    source, _ = _tree_with_bad_videos(sources, tmp_path / "source")
    store = tmp_path / "store"
    config = PrepareConfig(dataset="folder", source=str(source), store=str(store), max_bad_fraction=0.1, **SMALL)
    with pytest.raises(RayddError, match=r"2 of 14 videos .* above --max-bad-fraction 0.1") as error:
        prepare(config)
    assert "zz-garbage.mp4" in str(error.value) or "truncated.avi" in str(error.value)
    assert not (store / "datasets" / "folder" / "manifest.json").exists()
    with pytest.raises(RayddError, match="no prepared dataset"):
        open_prepared(str(store / "datasets" / "folder"))


def test_class_left_without_readable_training_clips_is_an_error(
    ray_cluster: None, sources: dict[str, Path], tmp_path: Path
) -> None:
    source = shutil.copytree(sources["folder"], tmp_path / "source")
    put_garbage(source / "gnu" / "a.mp4", seed=4)
    put_garbage(source / "gnu" / "b.mp4", seed=5)
    config = PrepareConfig(
        dataset="folder", source=str(source), store=str(tmp_path / "store"), max_bad_fraction=1.0, **SMALL
    )
    with pytest.raises(RayddError, match="class 'gnu' has no readable training clips left"):
        prepare(config)
    assert not (tmp_path / "store" / "datasets" / "folder" / "manifest.json").exists()


# --------------------------------------------------------- errors leave a prepared dataset untouched


def _empty_class(source: Path) -> tuple[Path, str]:
    (source / "fox").mkdir()
    (source / "fox" / "notes.txt").write_text("no videos here\n")
    return source, r"class folder .*/fox has no videos"


def _remove(relative: str, pattern: str):  # noqa: ANN202 - returns a tree editor
    def edit(source: Path) -> tuple[Path, str]:
        target = source / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        return source, pattern

    return edit


def _bad_videos(source: Path) -> tuple[Path, str]:
    put_garbage(source / "dog" / "zz-garbage.mp4")
    put_garbage(source / "cat" / "zz-garbage.avi", seed=1)
    return source, r"could not be decoded, above --max-bad-fraction"


# (dataset, how its source is broken, error message pattern)
BROKEN_SOURCES = {
    "empty class folder": ("folder", _empty_class),
    "missing source folder": ("folder", None),
    "too many bad videos": ("folder", _bad_videos),
    "missing UCF testlist": ("ucf101", _remove("ucfTrainTestlist/testlist01.txt", r"has no testlist01\.txt")),
    "missing UCF classInd": ("miniucf", _remove("ucfTrainTestlist/classInd.txt", r"has no classInd\.txt")),
    "missing HMDB splits": ("hmdb51", _remove("testTrainMulti_7030_splits", r"no \*_test_split1\.txt files")),
    "missing K400 val.csv": ("k400", _remove("annotations/val.csv", r"has no val\.csv")),
    "missing K400 train.csv": ("k400", _remove("annotations/train.csv", r"has no train\.csv")),
    "missing SSv2 labels.json": ("ssv2", _remove("labels/labels.json", r"has no labels\.json")),
    "missing SSv2 validation.json": ("ssv2", _remove("labels/validation.json", r"has no validation\.json")),
}


@pytest.mark.parametrize("case", list(BROKEN_SOURCES))
def test_broken_source_raises_and_leaves_the_prepared_dataset_intact(store: Store, tmp_path: Path, case: str) -> None:
    name, breaker = BROKEN_SOURCES[case]
    before = store.prepared(name)
    manifests = store.manifest_bytes()
    if breaker is None:
        source, pattern = tmp_path / "no-such-folder", r"source .*no-such-folder does not exist or is not a folder"
    else:
        source, pattern = breaker(shutil.copytree(store.sources[name], tmp_path / "source"))
    # overwrite: the new source would replace the dataset if it were good
    config = PrepareConfig(
        dataset=name, source=str(source), store=str(store.root), overwrite=True, max_bad_fraction=0.1, **SMALL
    )
    with pytest.raises(RayddError, match=pattern):
        prepare(config)
    assert store.manifest_bytes() == manifests
    dataset = open_prepared(store.uri(name))
    assert dataset.manifest.shards == before.shards
    assert len(dataset.split(TRAIN, verify=True)) == before.metadata["clips"][TRAIN]


def test_unknown_dataset_raises_and_leaves_the_store_intact(store: Store) -> None:
    store.prepared("folder")
    manifests = store.manifest_bytes()
    with pytest.raises(RayddError, match=r"unknown dataset 'kinetics-9000': use one of .*ucf101"):
        get_spec("kinetics-9000")
    with pytest.raises(RayddError, match=r"--dataset: expected one of .*ucf101.*; got 'kinetics-9000'"):
        prepare(
            PrepareConfig(dataset="kinetics-9000", source=str(store.sources["folder"]), store=str(store.root), **SMALL)
        )
    assert store.manifest_bytes() == manifests
    assert "kinetics-9000" not in dataset_names()
    assert not (store.root / "datasets" / "kinetics-9000").exists()


# ------------------------------------------------------------------------------- source on S3


def _upload(local: Path, fs, prefix: str) -> None:  # noqa: ANN001 - an s3fs filesystem
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes())


@pytest.mark.parametrize("name", ["folder", "ucf101", "k400"])
def test_source_on_s3_lists_and_prepares_like_a_local_one(
    ray_cluster: None, s3_bucket: str, sources: dict[str, Path], tmp_path: Path, name: str
) -> None:
    source = resolve(f"{s3_bucket}/raw/{name}")
    _upload(sources[name], source.fs, source.path)
    index = index_source(get_spec(name), source)
    local = _index(name, sources[name])
    relative = lambda clips, root: sorted((c.source[len(root) :].lower(), c.label, c.split) for c in clips)  # noqa: E731
    assert index.classes == local.classes and index.missing == local.missing
    assert relative(index.clips, source.path) == relative(local.clips, str(sources[name]))
    classes, clips, missing = EXPECTED[name]
    manifest = prepare(PrepareConfig(dataset=name, source=source.uri, store=str(tmp_path / "store"), **SMALL))
    assert manifest.metadata["clips"] == clips and manifest.metadata["missing"]["count"] == missing
    assert manifest.metadata["skipped"]["count"] == 0
    for split, count in clips.items():
        _check_prepared_split(str(tmp_path / "store" / "datasets" / name), split, count, len(classes))
