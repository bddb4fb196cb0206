"""Tiny real video files for the tests, written with PyAV, and fake raw-dataset trees in each real layout.

Every video is flat colour per frame so that lossy codecs reproduce it almost exactly: red and green
say which class a clip belongs to (:func:`class_color`), blue (or grey level, :func:`ramp_frames`)
grows with the frame index so that uniform sampling can be checked on the decoded frames.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from raydd.data.specs import MINIUCF_CLASSES

# container (file extension) -> the codecs the tests write it with
FORMATS: dict[str, tuple[str, ...]] = {
    "mp4": ("libx264", "mpeg4"),
    "avi": ("mpeg4",),
    "webm": ("libvpx-vp9", "libvpx"),
    "mkv": ("ffv1", "mpeg4"),
}
DEFAULT_CODEC = {"mp4": "libx264", "avi": "mpeg4", "webm": "libvpx-vp9", "mkv": "mpeg4"}
_CODEC_OPTIONS = {
    "libx264": {"crf": "10", "bf": "3"},  # B-frames: decode order differs from display order
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "crf": "4", "b": "1M"},
    "mpeg4": {"qscale": "2"},
}

# Small enough that a miniucf tree (100+ clips) is written and decoded in about a second.
TINY_FRAMES, TINY_HEIGHT, TINY_WIDTH = 8, 24, 32


def _encode(
    target: io.BytesIO | str,
    frames_THWC: np.ndarray,
    container: str,
    codec: str | None,
    fps: int,
    options: dict[str, str],
    pts_ms: Sequence[int] | None = None,
) -> None:
    frames_THWC = np.asarray(frames_THWC)
    assert frames_THWC.dtype == np.uint8 and frames_THWC.ndim == 4 and frames_THWC.shape[-1] == 3, frames_THWC.shape
    codec = codec or DEFAULT_CODEC[container]
    fmt = "matroska" if container == "mkv" else container
    with av.open(target, mode="w", format=fmt, options=options) as output:
        stream = output.add_stream(codec, rate=fps)
        stream.width, stream.height = frames_THWC.shape[2], frames_THWC.shape[1]
        stream.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
        stream.options = dict(_CODEC_OPTIONS.get(codec, {}))
        if pts_ms is not None:
            stream.time_base = Fraction(1, 1000)
        for number, image in enumerate(frames_THWC):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[number], Fraction(1, 1000)
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)


def encode_video(frames_THWC: np.ndarray, container: str = "mp4", codec: str | None = None, fps: int = 8) -> bytes:
    """The bytes of a ``container`` file holding ``frames_THWC`` (uint8 RGB) encoded with ``codec``."""
    buffer = io.BytesIO()
    _encode(buffer, frames_THWC, container, codec, fps, {})
    return buffer.getvalue()


def encode_timed_video(
    frames_THWC: np.ndarray, pts_ms: Sequence[int], container: str = "mkv", codec: str | None = None, fps: int = 24
) -> bytes:
    """Like :func:`encode_video`, but frame ``i`` is shown at ``pts_ms[i]`` milliseconds: a variable frame
    rate, or dropped frames (fewer frames than ``fps`` times the duration), as phone and screen recordings have."""
    assert len(pts_ms) == len(frames_THWC) and list(pts_ms) == sorted(set(pts_ms))
    buffer = io.BytesIO()
    _encode(buffer, frames_THWC, container, codec, fps, {}, pts_ms)
    return buffer.getvalue()


def write_video(
    path: Path | str, frames_THWC: np.ndarray, codec: str | None = None, fps: int = 8, faststart: bool = False
) -> Path:
    """Write ``frames_THWC`` to ``path`` (container from its extension); returns the path.

    ``faststart``: an mp4 with its index (moov) before the frames, as web downloads usually are.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = path.suffix.lstrip(".").lower()
    if faststart:
        _encode(str(path), frames_THWC, container, codec, fps, {"movflags": "faststart"})
    else:
        path.write_bytes(encode_video(frames_THWC, container, codec, fps))
    return path


def set_avi_frame_count(data: bytes, count: int) -> bytes:
    """An AVI whose headers (avih dwTotalFrames, strh dwLength) state ``count`` frames, whatever it holds."""
    patched = bytearray(data)
    avih, strh = patched.find(b"avih"), patched.find(b"strh")
    assert avih > 0 and strh > 0 and patched[strh + 8 : strh + 12] == b"vids"
    patched[avih + 24 : avih + 28] = struct.pack("<I", count)
    patched[strh + 40 : strh + 44] = struct.pack("<I", count)
    return bytes(patched)


def ramp_value(t: int, num_frames: int, low: int = 20, high: int = 235) -> int:
    """Brightness of frame ``t`` of a ramp video: grows linearly from ``low`` to ``high``."""
    return round(low + (high - low) * t / max(num_frames - 1, 1))


def ramp_frames(num_frames: int, height: int, width: int, low: int = 20, high: int = 235) -> np.ndarray:
    """Grey frames whose brightness is :func:`ramp_value` of their index: frame order is visible after decoding."""
    values = np.array([ramp_value(t, num_frames, low, high) for t in range(num_frames)], np.uint8)
    return np.broadcast_to(values[:, None, None, None], (num_frames, height, width, 3)).copy()


def class_color(label: int) -> tuple[int, int]:
    """(red, green) of the clips of class ``label``: 8 x 8 well-separated levels, so up to 64 classes."""
    assert 0 <= label < 64
    return 32 + 28 * (label % 8), 32 + 28 * (label // 8)


def class_frames(
    label: int, num_frames: int = TINY_FRAMES, height: int = TINY_HEIGHT, width: int = TINY_WIDTH
) -> np.ndarray:
    """Frames of a clip of class ``label``: red/green from :func:`class_color`, blue ramps with time."""
    red, green = class_color(label)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[..., 0], frames[..., 1] = red, green
    frames[..., 2] = np.array([ramp_value(t, num_frames, 30, 220) for t in range(num_frames)], np.uint8)[:, None, None]
    return frames


def label_of_frames(frames_THWC: np.ndarray) -> int:
    """The class whose :func:`class_color` is nearest to the mean red/green of decoded frames."""
    red, green = (float(frames_THWC[..., c].mean()) for c in (0, 1))
    return min(range(64), key=lambda k: (class_color(k)[0] - red) ** 2 + (class_color(k)[1] - green) ** 2)


@functools.cache
def class_video(label: int, container: str, codec: str | None = None) -> bytes:
    """Bytes of a tiny clip of class ``label`` (cached: trees with many clips reuse the encodings)."""
    return encode_video(class_frames(label), container, codec)


def put_video(path: Path, label: int, codec: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(class_video(label, path.suffix.lstrip(".").lower(), codec))
    return path


def put_garbage(path: Path, size: int = 4000, seed: int = 0) -> Path:
    """A file with a video extension holding random bytes (no container at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


# ------------------------------------------------------------------------------------------- source trees


def folder_tree(root: Path, classes: Sequence[str] = ("cat", "dog", "eel"), per_class: int = 4) -> Path:
    """SOURCE/<class>/<video>, cycling through every container, plus files the layout must ignore."""
    containers = ("mp4", "avi", "webm", "mkv")
    for label, name in enumerate(classes):
        for i in range(per_class):
            container = containers[(label + i) % len(containers)]
            put_video(root / name / f"clip{i}.{container}", label)
        (root / name / "notes.txt").write_text("not a video\n")
        (root / name / ".hidden.mp4").write_bytes(b"")  # hidden: macOS resource forks and the like
    (root / ".cache").mkdir(parents=True, exist_ok=True)  # a hidden folder is not a class
    put_video(root / ".cache" / "x.mp4", 0)
    (root / "README.txt").write_text("a folder dataset\n")
    return root


def ucf_clip_name(name: str, group: int, clip: int) -> str:
    return f"v_{name}_g{group:02d}_c{clip:02d}.avi"


def ucf101_tree(
    root: Path,
    classes: Sequence[str] = ("ApplyEyeMakeup", "Basketball", "HandstandPushups"),
    extra_classes: Sequence[str] = (),
    train_per_class: int = 2,
    test_per_class: int = 1,
    missing: Sequence[str] = (),
) -> Path:
    """UCF101: SOURCE/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    + SOURCE/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt.

    ``classes`` and ``extra_classes`` all go into classInd.txt (extras first, so that label numbers
    of a fixed class list cannot simply be the classInd numbers). Train clips come from groups 8+,
    test clips from groups 1-7, as in the official split 1. Files are written with CRLF line endings,
    like the official lists. ``missing``: relative list entries whose videos are not written.
    """
    all_classes = list(extra_classes) + list(classes)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_bytes("".join(f"{i} {name}\r\n" for i, name in enumerate(all_classes, 1)).encode())
    train, test = [], []
    for number, name in enumerate(all_classes, 1):
        # The official files spell HandstandPushups' folder with a capital S: matching ignores case.
        folder = "HandStandPushups" if name == "HandstandPushups" else name
        label = number - 1
        for i in range(train_per_class + test_per_class):
            group, clip = (8 + i, 1) if i < train_per_class else (1 + i - train_per_class, 1)
            relative = f"{name}/{ucf_clip_name(name, group, clip)}"
            if relative not in missing:
                put_video(root / "UCF-101" / folder / ucf_clip_name(name, group, clip), label % 64)
            if i < train_per_class:
                train.append(f"{relative} {number}")
            else:
                test.append(relative)
    (lists / "trainlist01.txt").write_bytes("".join(line + "\r\n" for line in train).encode())
    (lists / "testlist01.txt").write_bytes("".join(line + "\r\n" for line in test).encode())
    (lists / "trainlist02.txt").write_bytes(b"")  # other splits exist but are not used
    return root


def miniucf_tree(root: Path, extra_classes: Sequence[str] = ("Archery", "YoYo")) -> Path:
    """The 50 MiniUCF classes plus some UCF101 classes MiniUCF excludes; one train and one test clip each.

    Every class's videos carry the colour of its MiniUCF label (extras: labels 50, 51...).
    """
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    # classInd in alphabetical order as in UCF101: MiniUCF labels are not classInd numbers.
    ordered = sorted(list(MINIUCF_CLASSES) + list(extra_classes))
    color_of = {name: label for label, name in enumerate(list(MINIUCF_CLASSES) + list(extra_classes))}
    (lists / "classInd.txt").write_bytes("".join(f"{i} {name}\r\n" for i, name in enumerate(ordered, 1)).encode())
    train, test = [], []
    for number, name in enumerate(ordered, 1):
        put_video(root / "UCF-101" / name / ucf_clip_name(name, 8, 1), color_of[name])
        put_video(root / "UCF-101" / name / ucf_clip_name(name, 1, 1), color_of[name])
        train.append(f"{name}/{ucf_clip_name(name, 8, 1)} {number}\r\n")
        test.append(f"{name}/{ucf_clip_name(name, 1, 1)}\r\n")
    (lists / "trainlist01.txt").write_bytes("".join(train).encode())
    (lists / "testlist01.txt").write_bytes("".join(test).encode())
    return root


def hmdb51_tree(root: Path, classes: Sequence[str] = ("brush_hair", "cartwheel", "kick_ball")) -> Path:
    """HMDB51: SOURCE/<class>/<name>.avi + SOURCE/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt.

    Per class: 2 train ("1"), 1 test ("2") and 1 unused ("0") clip in split 1; names carry HMDB's
    odd characters. Split files 2 and 3 mark everything as train (they must be ignored for split 1).
    """
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(classes):
        entries = [
            (f"April_09_{name}_u_nm_np1_ba_goo_0.avi", 1),
            (f"Prelinger_[HD]_{name}_f_cm_np1_fr_med_1.avi", 1),
            (f"#20_Rhythm_{name}_u_cm_np1_le_goo_2.avi", 2),
            (f"unused_{name}_f_nm_np2_ri_bad_3.avi", 0),
        ]
        for video, _ in entries:
            put_video(root / name / video, label)
        # the official files end every line with a space
        (splits / f"{name}_test_split1.txt").write_text("".join(f"{video} {split} \n" for video, split in entries))
        for other in (2, 3):
            (splits / f"{name}_test_split{other}.txt").write_text("".join(f"{video} 1 \n" for video, _ in entries))
    return root


def k400_tree(
    root: Path,
    classes: Sequence[str] = ("abseiling", "air drumming", "passing American football (in game)"),
    train_per_class: int = 2,
    test_per_class: int = 1,
    missing: int = 1,
) -> Path:
    """Kinetics-400: SOURCE/annotations/{train,val}.csv + SOURCE/{train,val}/<youtube_id>_<start:06d>_<end:06d>.mp4.

    The first class has ``missing`` extra train rows whose videos were never downloaded (as always
    happens with Kinetics: YouTube videos disappear); one val row names a class absent from train.
    """
    annotations = root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    header = ["label", "youtube_id", "time_start", "time_end", "split"]
    tables = {"train": [], "val": []}
    for label, name in enumerate(classes):
        counts = {"train": train_per_class + (missing if label == 0 else 0), "val": test_per_class}
        for split, count in counts.items():
            for i in range(count):
                youtube_id = f"{split[:2]}{label}x{i}-AbC_"  # YouTube ids mix case, '-' and '_'
                start = 10 * i + 3
                tables[split].append([name, youtube_id, start, start + 10, split])
                if split == "train" and i >= train_per_class:
                    continue  # annotated, but absent
                put_video(root / split / f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4", label)
    tables["val"].append(["a class only val has", "zzOnlyVal01", 0, 10, "val"])
    put_video(root / "val" / "zzOnlyVal01_000000_000010.mp4", 0)
    for split, rows in tables.items():
        with open(annotations / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return root


def ssv2_tree(
    root: Path,
    templates: Sequence[str] = (
        "Putting [something] on a surface",
        "Pushing [something] from left to right",
        "Holding [something]",
    ),
    train_per_class: int = 2,
    test_per_class: int = 1,
) -> Path:
    """Something-Something V2: SOURCE/labels/{labels,train,validation,test}.json
    + SOURCE/20bn-something-something-v2/<id>.webm.

    labels.json numbers the classes in an order other than ``templates`` (the layout must use it).
    """
    labels_dir = root / "labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    names = [t.replace("[", "").replace("]", "") for t in templates]
    order = list(reversed(range(len(names))))  # index given by labels.json
    (labels_dir / "labels.json").write_text(json.dumps({names[k]: str(order[k]) for k in range(len(names))}, indent=1))
    entries = {"train": [], "validation": []}
    video_id = 1000
    for k, template in enumerate(templates):
        label = order[k]  # the label the prepared dataset must use: position in labels.json order
        for split, count in (("train", train_per_class), ("validation", test_per_class)):
            for _ in range(count):
                video_id += 1
                entries[split].append(
                    {
                        "id": str(video_id),
                        "label": template.replace("[something]", "a cup"),
                        "template": template,
                        "placeholders": ["a cup"],
                    }
                )
                put_video(root / "20bn-something-something-v2" / f"{video_id}.webm", label)
    for split, rows in entries.items():
        (labels_dir / f"{split}.json").write_text(json.dumps(rows))
    (labels_dir / "test.json").write_text(json.dumps([{"id": "99999"}]))
    return root


def ssv2_class_order(
    templates: Sequence[str] = (
        "Putting [something] on a surface",
        "Pushing [something] from left to right",
        "Holding [something]",
    ),
) -> tuple[str, ...]:
    """The classes ``ssv2_tree`` declares, in label order."""
    names = [t.replace("[", "").replace("]", "") for t in templates]
    return tuple(reversed(names))
