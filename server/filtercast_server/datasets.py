"""Operators' image folders: registered per model, listed within bounds, hashed by content.

    --dataset NAME=DIR                 for every served model
    [models.NAME.datasets] NAME = DIR  in the models file, for that model

A folder is listed recursively: files ending .png, .jpg or .jpeg (any case)
are its images, everything else (and hidden files, and links that lead out
of the folder) is not. Images are taken in path order up to `max_images`;
the rest, files over the byte limit and files that cannot be read are
skipped and counted by reason, never fatal. A file that does not decode is
counted when the index reads it (images.py checks it like a client's image).

The folder's content hash is the sha256 of every image's path and the
sha256 of its bytes: it names the index built from it, so a changed,
added or removed image means another index, and a file merely touched does
not. Digests are remembered per (path, size, mtime, inode), so listing a
folder again reads only what changed since.

TF-free: nothing here imports TensorFlow.
"""

import hashlib
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from filtercast.contract import MAX_IMAGE_BYTES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_IMAGES = 10_000  # per folder, by default (--dataset-max-images)


@dataclass(frozen=True)
class DatasetImage:
    """One image of a folder: its path inside it and the sha256 of its bytes."""

    name: str  # relative path, "/"-separated
    sha256: str


@dataclass(frozen=True)
class Listing:
    """A folder as it is now: its images in path order, what was skipped, the content hash."""

    images: tuple[DatasetImage, ...]
    skipped: dict[str, int]  # reason -> count: too_many, too_large, unreadable
    content_sha256: str


@dataclass(frozen=True)
class Dataset:
    """A registered folder (it is listed when an index is asked for, not at start)."""

    name: str
    directory: Path
    max_images: int = MAX_IMAGES
    max_file_bytes: int = MAX_IMAGE_BYTES
    _digests: dict[tuple[str, int, int, int], str] = field(
        default_factory=dict, compare=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def list(self) -> Listing:
        """The folder's images now, hashed (blocking: it reads what changed since last time)."""
        candidates = _image_paths(self.directory)
        skipped: Counter[str] = Counter()
        if len(candidates) > self.max_images:
            skipped["too_many"] = len(candidates) - self.max_images
            candidates = candidates[: self.max_images]
        images = []
        seen: dict[tuple[str, int, int, int], str] = {}
        for name in candidates:
            path = self.directory / name
            try:
                stat = path.stat()
                if stat.st_size > self.max_file_bytes:
                    skipped["too_large"] += 1
                    continue
                memo = (name, stat.st_size, stat.st_mtime_ns, stat.st_ino)
                digest = self._digests.get(memo) or hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                skipped["unreadable"] += 1
                continue
            seen[memo] = digest
            images.append(DatasetImage(name, digest))
        with self._lock:  # only what exists now is remembered
            self._digests.clear()
            self._digests.update(seen)
        content = hashlib.sha256()
        for image in images:
            content.update(f"{image.name}\0{image.sha256}\n".encode())
        return Listing(tuple(images), dict(skipped), content.hexdigest())

    def read(self, image: DatasetImage) -> bytes:
        """The bytes of `image`, or OSError when it is not what the listing hashed."""
        data = (self.directory / image.name).read_bytes()
        if hashlib.sha256(data).hexdigest() != image.sha256:
            raise OSError(f"{image.name} changed since the folder was listed")
        return data


def _image_paths(root: Path) -> list[str]:
    """Relative paths of the images under `root`, sorted; links out of it are not followed."""
    top = root.resolve()
    found = []
    for directory, subdirectories, files in os.walk(top, followlinks=False):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for file in files:
            if file.startswith(".") or not file.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = Path(directory, file)
            if path.is_symlink() and not path.resolve().is_relative_to(top):
                continue
            found.append(path.relative_to(top).as_posix())
    return sorted(found)
