"""The secret that authenticates cache entries (entry.EntryCodec).

Replicas that share a cache share its secret: `--cache-secret-file` names a
file holding it (a Kubernetes Secret in deploy/k8s). It is required for
Redis, which others may write to. A local directory without one keeps its own
secret in `<directory>/secret`, created once with mode 0600, so its entries
survive restarts; whoever can read that file can forge entries, which is
exactly who can write to the directory anyway (it is made 0700).
"""

import contextlib
import os
import secrets
import stat
from pathlib import Path

MIN_SECRET_BYTES = 32
DIRECTORY_SECRET = "secret"
HOW_TO_MAKE = "python3 -c 'import secrets; print(secrets.token_hex(32))' > cache.secret"


class CacheSecretError(ValueError):
    """A secret file that cannot be used (the server refuses to start)."""


def read_secret(path: Path) -> bytes:
    """The secret in `path` (surrounding whitespace stripped), at least 32 bytes of it."""
    try:
        with open(path, "rb") as file:
            data = file.read(64 * 1024 + 1)
    except OSError as error:
        raise CacheSecretError(f"cannot read the cache secret {path}: {error}") from error
    secret = data.strip()
    if len(data) > 64 * 1024 or len(secret) < MIN_SECRET_BYTES:
        raise CacheSecretError(
            f"the cache secret {path} must hold {MIN_SECRET_BYTES} to 65536 bytes "
            f"(it holds {len(secret)}); make one with: {HOW_TO_MAKE}"
        )
    return secret


def directory_secret(directory: Path) -> bytes:
    """The secret kept in `directory`, made (0600) when there is none yet."""
    path = directory / DIRECTORY_SECRET
    if not path.exists():
        _link_new(path, secrets.token_hex(32).encode())
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise CacheSecretError(f"{path} is not a regular file")
    if info.st_mode & 0o077:
        raise CacheSecretError(
            f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}): "
            f"chmod 600 {path}, or delete it to have a new one made"
        )
    return read_secret(path)


def restore_secret(directory: Path, secret: bytes) -> None:
    """Put `secret` back in a directory made again under a running server."""
    _link_new(directory / DIRECTORY_SECRET, secret)


def _link_new(path: Path, secret: bytes) -> None:
    """Write `secret` to `path` (0600) unless it exists.

    Several processes may start on one directory at once: each writes its
    candidate to a private file and links it into place; the first link wins
    and the others then read the winner's.
    """
    candidate = path.with_name(f".{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secret + b"\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process won
            os.link(candidate, path)
    finally:
        candidate.unlink(missing_ok=True)
