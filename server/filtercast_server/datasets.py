"""Operators' image folders: registered per model, listed within bounds, hashed by content.

    --dataset NAME=DIR                 for every served model
    [models.NAME.datasets] NAME = DIR  in the models file, for that model

A folder is listed recursively: regular files ending .png, .jpg or .jpeg
(any case) are its images, everything else (hidden files, links that lead
out of the folder) is not. Images are taken in path order up to
`max_images`; the rest, files over the byte limit (read at most that far:
a file growing meanwhile is no way around it), files that are not regular
(a FIFO would block a read forever), names that are not UTF-8 and files
that cannot be read are skipped and counted by reason, never fatal. A file that does not decode is
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
from stat import S_ISREG

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
    skipped: dict[str, int]  # reason -> count (too_many, too_large, not_a_file, bad_name, ...)
    content_sha256: str


@dataclass(frozen=True)
class Dataset:
    """A registered folder (it is listed when an index is asked for, not at start)."""

    name: str
    directory: Path
    max_images: int = MAX_IMAGES
    max_file_bytes: int = MAX_IMAGE_BYTES
    # name -> ((size, mtime, ctime, inode), sha256); ctime is the kernel's: utime cannot set it
    _digests: dict[str, tuple[tuple[int, ...], str]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def list(self) -> Listing:
        """The folder's images now, hashed (blocking: it reads what changed since last time).

        DatasetGoneError when the folder is no longer there (an empty folder is an empty
        dataset; a missing one is the operator's to restore, not an index of nothing).
        """
        if not self.directory.is_dir():
            raise DatasetGoneError(f"dataset {self.name}: its folder is gone from the server")
        skipped: Counter[str] = Counter()
        images: list[DatasetImage] = []
        seen: dict[str, tuple[tuple[int, ...], str]] = {}
        for name in _image_paths(self.directory, skipped):
            if len(images) == self.max_images:
                skipped["too_many"] += 1  # counted, not read
                continue
            found = self._digest(name, skipped)
            if found is not None:
                seen[name] = found
                images.append(DatasetImage(name, found[1]))
        with self._lock:  # only what exists now is remembered
            self._digests.clear()
            self._digests.update(seen)
        content = hashlib.sha256()
        for image in images:
            content.update(f"{image.name}\0{image.sha256}\n".encode())
        return Listing(tuple(images), dict(skipped), content.hexdigest())

    def _digest(self, name: str, skipped: Counter[str]) -> tuple[tuple[int, ...], str] | None:
        """(the file's identity, its sha256), or None with the reason it is skipped counted."""
        path = self.directory / name
        try:
            name.encode()  # a proto string, a JSON field: it must be UTF-8
            stat = path.stat()
            if not S_ISREG(stat.st_mode):
                skipped["not_a_file"] += 1
                return None
            if stat.st_size > self.max_file_bytes:
                skipped["too_large"] += 1
                return None
            identity = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
            known = self._digests.get(name)
            if known is not None and known[0] == identity:
                return known
            return identity, hashlib.sha256(self._bytes(path)).hexdigest()
        except UnicodeEncodeError:
            skipped["bad_name"] += 1
        except TooLargeError:
            skipped["too_large"] += 1
        except OSError:
            skipped["unreadable"] += 1
        return None

    def read(self, image: DatasetImage) -> bytes:
        """The bytes of `image`, or OSError when it is not what the listing hashed."""
        try:
            data = self._bytes(self.directory / image.name)
        except RefusedFileError:
            raise
        except OSError as error:  # its message holds the server's path: not for a client
            raise OSError(f"{image.name} cannot be read: {type(error).__name__}") from error
        if hashlib.sha256(data).hexdigest() != image.sha256:
            with self._lock:  # the next listing hashes it again, whatever its stat says
                self._digests.pop(image.name, None)
            raise OSError(f"{image.name} changed since the folder was listed")
        return data

    def _bytes(self, path: Path) -> bytes:
        """A regular file's bytes inside the folder, read no further than the bound.

        Opened without blocking and checked once open: a file swapped for a
        FIFO after the listing fails here instead of waiting for a writer, and
        one swapped for a link out of the folder is refused by where the open
        file really is. TooLargeError past the bound.
        """
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as file:
            if not S_ISREG(os.fstat(descriptor).st_mode):
                raise RefusedFileError(f"{path.name} is not a regular file")
            if not _opened_path(descriptor, path).is_relative_to(self.directory.resolve()):
                raise RefusedFileError(f"{path.name} leads out of the folder")
            data = file.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise TooLargeError(f"{path.name} is over {self.max_file_bytes} bytes")
        return data


def _opened_path(descriptor: int, path: Path) -> Path:
    """Where an open file really is: Linux says it of the descriptor, elsewhere the path."""
    proc = Path(f"/proc/self/fd/{descriptor}")
    try:
        return Path(os.readlink(proc)) if proc.is_symlink() else path.resolve()
    except (OSError, RuntimeError):
        return path.resolve()


class DatasetGoneError(Exception):
    """A registered folder no longer exists (FAILED_PRECONDITION: the operator restores it)."""


class RefusedFileError(OSError):
    """A dataset file this server will not read (its message names it, not its path)."""


class TooLargeError(RefusedFileError):
    """A file grew past the byte bound after its size was checked."""


def _image_paths(root: Path, skipped: Counter[str]) -> list[str]:
    """Relative paths of the images under `root`, sorted; links out of it are not followed.

    A link that loops (or cannot be resolved) is skipped and counted as unreadable.
    """
    top = root.resolve()
    found = []
    for directory, subdirectories, files in os.walk(top, followlinks=False):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for file in files:
            if file.startswith(".") or not file.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = Path(directory, file)
            try:
                if path.is_symlink() and not path.resolve(strict=True).is_relative_to(top):
                    continue
            except (OSError, RuntimeError):  # a loop, a dangling link
                skipped["unreadable"] += 1
                continue
            found.append(path.relative_to(top).as_posix())
    return sorted(found)
