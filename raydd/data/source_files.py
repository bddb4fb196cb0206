"""A raw source listed once: its video files and annotation files, for the layouts in :mod:`raydd.data.layouts`.

Locally, symlinked folders are followed; on object stores the listing is fsspec's ``find``. The listing is cached
while one source is indexed (:func:`raydd.data.layouts.index_source` clears it before and after).
"""

from __future__ import annotations

import functools
import os

from raydd.data.specs import DatasetSpec
from raydd.errors import RayddError
from raydd.storage import Location, read_bytes, storage_errors

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv", ".3gp"})


@functools.lru_cache(maxsize=4)
def find_files(source: Location) -> list[str]:
    """Every file below ``source``. Locally, symlinked folders are followed (fsspec's ``find`` skips
    them), since datasets are often assembled from links to the real class folders."""
    with storage_errors(source):
        if not source.is_local:
            return source.fs.find(source.path)
        found = []
        for folder, subfolders, names in os.walk(source.path, followlinks=True):
            if _links_to_an_ancestor(folder, source.path):  # would loop forever
                subfolders.clear()
                continue
            found += [path for path in (f"{folder}/{name}" for name in names) if os.path.isfile(path)]
        return sorted(found)


def _links_to_an_ancestor(folder: str, root: str) -> bool:
    real, parent = os.path.realpath(folder), os.path.dirname(folder)
    while len(parent) >= len(root):
        if os.path.realpath(parent) == real:
            return True
        parent = os.path.dirname(parent)
    return False


def is_folder(source: Location, entry: dict) -> bool:
    return entry["type"] == "directory" or bool(entry.get("islink") and source.fs.isdir(entry["name"]))


def video_files(source: Location) -> dict[str, str]:
    """Every video below ``source``: lower-cased path relative to it -> full filesystem path."""
    root = source.path.rstrip("/") + "/"
    found = find_files(source)
    files = {}
    for path in found:
        name = path.rsplit("/", 1)[-1]
        if "." + name.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS and not name.startswith("."):
            files[path[len(root) :].lower() if path.startswith(root) else path.lower()] = path
    return files


def file_stem(relative: str) -> str:
    return relative.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def text_files(source: Location, suffix: str) -> dict[str, str]:
    """Annotation files below ``source`` whose names end with ``suffix``: file name -> full path."""
    return {path.rsplit("/", 1)[-1]: path for path in find_files(source) if path.endswith(suffix)}


def read_text(source: Location, path: str) -> str:
    return read_bytes(Location(uri=path, fs=source.fs, path=path)).decode("utf-8", errors="replace")


def require_file(files: dict[str, str], name: str, spec: DatasetSpec, source: Location) -> str:
    if name not in files:
        raise RayddError(f"{spec.name} source {source} has no {name}: expected the layout '{spec.description}'")
    return files[name]
