"""Where cached entries live: a local directory (diskcache) or Redis.

Both take and give opaque bytes under a cache key; neither knows what an
entry holds. Every method may raise: results.ResultCache turns a fault into
a counted, logged miss, never a failed request. Reads are bounded: no
value longer than entry.MAX_ENTRY_BYTES is read whole.

- DiskBackend: diskcache (a SQLite index, each value in a file of its own)
  in a directory. A lookup never writes (a full disk still serves what it
  holds), so eviction goes by age of storage: the oldest-stored entries go
  once `max_bytes` is exceeded, or when the filesystem's free space falls
  under a reserve. Survives restarts, is safe with several processes on one
  directory, and comes back 0700 if the directory is deleted under it.
- RedisBackend: one Redis for replicas that share results. Entries expire
  after `ttl` seconds; the memory bound is Redis's own (`maxmemory` with an
  `allkeys-lru` policy), which it checks and warns about at start.
"""

import errno
import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from filtercast_server.cache.entry import MAX_ENTRY_BYTES
from filtercast_server.cache.secret import (
    HOW_TO_MAKE,
    CacheSecretError,
    directory_secret,
    read_secret,
    restore_secret,
)

log = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
REDIS_PREFIX = "filtercast:result:"
REDIS_TIMEOUT_SECONDS = 0.5  # per command, no retry: a dead Redis costs one timeout, then a rest
DISK_TIMEOUT_SECONDS = 2.0  # SQLite lock wait before a store counts as a fault
MAX_RESERVE_BYTES = 64 * 1024**2  # free space a directory cache leaves on its filesystem...
RESERVE_SHARE = 20  # ...or 1/20 of the filesystem, when that is less


class RefusedValueError(ValueError):
    """A stored value of a kind this cache never writes (a pickle): never loaded."""


class Backend(Protocol):
    """Bytes by key."""

    description: str
    ttl: float | None  # seconds an entry lives; None: until evicted

    def contains_many(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are stored (without reading them)."""
        ...

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The entries found among `keys` (each cut at MAX_ENTRY_BYTES + 1 bytes)."""
        ...

    def put(self, key: str, blob: bytes) -> int:
        """Store (or replace) one entry; how many others were evicted for want of space."""
        ...

    def delete(self, key: str) -> None:
        """Drop one entry (a corrupt one)."""
        ...

    def clear(self) -> int:
        """Drop every entry; how many there were."""
        ...

    def volume(self) -> int:
        """Bytes the store holds."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...


def default_directory() -> Path:
    """$XDG_CACHE_HOME/filtercast, else ~/.cache/filtercast."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "filtercast"


def disk_full(error: BaseException) -> bool:
    """Whether `error` is a filesystem out of space (SQLite's or the OS's words for it)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, sqlite3.OperationalError) and "full" in str(error)


class DiskBackend:
    """diskcache in `directory`, evicted oldest-stored first, entries expiring after `ttl`."""

    def __init__(self, directory: Path, max_bytes: int, ttl: float | None) -> None:
        self.directory = directory
        self.description = f"directory {directory}"
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._secret: bytes | None = None  # the directory's own, once asked for
        self._open()

    def _open(self) -> None:
        import diskcache

        class BytesOnly(diskcache.Disk):
            """Values are bytes: a pickled row (someone else's write) is refused, never loaded."""

            def fetch(self, mode: int, filename: str, value: object, read: bool) -> object:
                if mode == diskcache.core.MODE_PICKLE:
                    raise RefusedValueError("a pickled value in the cache directory")
                return super().fetch(mode, filename, value, read)

        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._identity = _identity(self.directory)
        self._cache = diskcache.Cache(
            str(self.directory),
            size_limit=self.max_bytes,
            # Least recently *used* would make every lookup a write (its access time):
            # a full disk would fail reads too, and concurrent hits queue for the lock.
            eviction_policy="least-recently-stored",
            timeout=DISK_TIMEOUT_SECONDS,
            statistics=False,
            cull_limit=1,  # diskcache's default (10 a time) empties a small cache in one go
            disk=BytesOnly,
            # Every value in its own file: evicting one frees its space on the filesystem
            # at once, and the SQLite index stays small.
            disk_min_file_size=0,
        )

    def own_secret(self) -> bytes:
        """The secret kept in the directory (made on first use), for entries of a lone server."""
        self._secret = directory_secret(self.directory)
        return self._secret

    def contains_many(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are stored (an index lookup each; no value read, nothing written)."""
        return {key for key in keys if key in self._cache}

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The entries found among `keys` (reads only: no access time is written)."""
        found = {}
        for key in keys:
            try:
                value = self._cache.get(key, read=True)
            except RefusedValueError:  # not ours: dropped, like a corrupt entry
                log.warning("%s: dropped a pickled value under %s", self.description, key)
                self._cache.delete(key)
                continue
            if isinstance(value, bytes):  # an older layout kept small values in the index
                found[key] = value[: MAX_ENTRY_BYTES + 1]
            elif value is not None:
                with value:
                    found[key] = value.read(MAX_ENTRY_BYTES + 1)
        return found

    def put(self, key: str, blob: bytes) -> int:
        """Store one entry, evicting the oldest-stored beyond the size bound or the free space.

        The filesystem's free space is kept above a reserve (64 MiB, or 1/20 of a
        smaller filesystem) so that deletions, which SQLite must write too, still
        fit; a write that finds the disk full all the same evicts and tries once more.
        """
        self._ensure_directory()
        evicted = self._evict(len(blob) + self._reserve() - _free_bytes(self.directory))
        try:
            self._cache.set(key, blob, expire=self.ttl)
        except Exception as error:
            if not disk_full(error):
                raise
            evicted += self._evict(len(blob) + self._reserve())
            self._cache.set(key, blob, expire=self.ttl)
        if self._cache.volume() > self.max_bytes:  # a large entry: one cull was not enough
            self._cache.cull()
        return evicted

    def _reserve(self) -> int:
        info = os.statvfs(self.directory)
        return min(MAX_RESERVE_BYTES, info.f_blocks * info.f_frsize // RESERVE_SHARE)

    def _evict(self, shortfall: int) -> int:
        """Drop the oldest-stored entries until `shortfall` more bytes are free; how many."""
        if shortfall <= 0:
            return 0
        target = max(0, self._cache.volume() - shortfall)
        # diskcache culls down to its size limit: lower it in memory for this cull only.
        self._cache.reset("size_limit", target, update=False)
        try:
            return int(self._cache.cull())
        finally:
            self._cache.reset("size_limit", self.max_bytes, update=False)

    def _ensure_directory(self) -> None:
        """Open a fresh index in a fresh 0700 directory if ours was deleted or replaced."""
        try:
            if _identity(self.directory) == self._identity:
                return
        except FileNotFoundError:
            pass
        log.warning("%s: the directory was removed or replaced; starting again", self.description)
        old = self._cache
        self._open()
        if self._secret is not None:
            restore_secret(self.directory, self._secret)
        old.close()

    def delete(self, key: str) -> None:
        """Drop one entry."""
        self._cache.delete(key)

    def clear(self) -> int:
        """Drop every entry: the value files first (that needs no space), then the index."""
        files = remove_value_files(self.directory)
        return max(files, int(self._cache.clear()))

    def volume(self) -> int:
        """Bytes on disk (index and files)."""
        return int(self._cache.volume())

    def close(self) -> None:
        """Close the index."""
        self._cache.close()


def remove_value_files(directory: Path) -> int:
    """Delete the value files of the diskcache in `directory`; how many.

    Frees the space of every entry without writing anything, so a cache on a
    full disk can be emptied; servers reading it find their entries gone (a miss).
    """
    removed = 0
    for value in directory.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*.val"):
        value.unlink(missing_ok=True)
        removed += 1
    return removed


def _identity(directory: Path) -> tuple[int, int]:
    info = directory.stat()
    return info.st_dev, info.st_ino


def _free_bytes(directory: Path) -> int:
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize


class RedisBackend:
    """Entries under `filtercast:result:<key>` in the Redis at `url`, expiring after `ttl`."""

    def __init__(self, url: str, ttl: float | None) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.ttl: float | None = None if ttl is None else max(1, round(ttl))
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),  # one try: the cache rests rather than retrying
            health_check_interval=30,
        )
        # The URL may carry a password: describe it without.
        kwargs = self._redis.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        self.description = f"redis {where} db {kwargs.get('db', 0)}"

    def check_policy(self) -> None:
        """Warn when Redis would grow without bound or refuse writes when full."""
        raw: dict[Any, Any] = self._redis.config_get("maxmemory*")
        config = {_text(k): _text(v) for k, v in raw.items()}
        memory = int(config.get("maxmemory") or 0)
        policy = config.get("maxmemory-policy", "")
        if memory == 0 or ("lru" not in policy and "lfu" not in policy):
            log.warning(
                "%s: maxmemory %d, policy %s; set maxmemory and maxmemory-policy allkeys-lru "
                "so the cache stays bounded (entries also expire after %s s)",
                self.description,
                memory,
                policy or "?",
                self.ttl,
            )

    def contains_many(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are stored, in one round trip."""
        keys = list(keys)
        pipeline = self._redis.pipeline(transaction=False)
        for key in keys:
            pipeline.exists(REDIS_PREFIX + key)
        return {key for key, found in zip(keys, pipeline.execute(), strict=True) if found}

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The entries found among `keys`, in one round trip, each cut at the entry bound."""
        keys = list(keys)
        pipeline = self._redis.pipeline(transaction=False)
        for key in keys:
            pipeline.getrange(REDIS_PREFIX + key, 0, MAX_ENTRY_BYTES)  # end inclusive: bound + 1
        values: list[Any] = pipeline.execute() if keys else []
        # A missing key reads as b"": no entry is empty.
        return {key: bytes(v) for key, v in zip(keys, values, strict=True) if v}

    def put(self, key: str, blob: bytes) -> int:
        """Store one entry with the TTL (Redis evicts by its own policy: none counted here)."""
        self._redis.set(REDIS_PREFIX + key, blob, ex=None if self.ttl is None else int(self.ttl))
        return 0

    def delete(self, key: str) -> None:
        """Drop one entry."""
        self._redis.delete(REDIS_PREFIX + key)

    def clear(self) -> int:
        """Drop every filtercast entry of this database (other keys stay)."""
        removed = 0
        batch: list[bytes] = []
        for name in self._redis.scan_iter(match=REDIS_PREFIX + "*", count=1000):
            batch.append(name)
            if len(batch) == 1000:
                removed += int(self._redis.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(self._redis.unlink(*batch))
        return removed

    def volume(self) -> int:
        """Bytes the Redis server uses (all its data: it keeps no per-prefix figure)."""
        return int(self._redis.info("memory")["used_memory"])

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_backend(spec: str, max_bytes: int, ttl: float | None) -> Backend | None:
    """The backend `spec` names: off (None), auto (the default directory), a folder, a Redis URL."""
    if spec == "off":
        return None
    if spec.startswith(REDIS_SCHEMES):
        backend = RedisBackend(spec, ttl)
        try:
            backend.check_policy()
        except Exception as error:  # CONFIG may be disabled (managed Redis) or Redis down
            log.warning("%s: could not read its memory policy (%s)", backend.description, error)
        return backend
    directory = default_directory() if spec == "auto" else Path(spec).expanduser()
    return DiskBackend(directory, max_bytes, ttl)


def cache_secret(backend: Backend, secret_file: str) -> bytes:
    """The secret for `backend`: the file's when one is named, else a directory's own.

    CacheSecretError for Redis without a file: it is shared, and a secret of
    this process alone would make every other replica's entries forgeries.
    """
    if secret_file:
        return read_secret(Path(secret_file))
    if isinstance(backend, DiskBackend):
        return backend.own_secret()
    raise CacheSecretError(
        f"{backend.description} is shared: give every replica the same --cache-secret-file "
        f"(make one with: {HOW_TO_MAKE})"
    )


def empty_cache(spec: str) -> tuple[str, int]:
    """Empty the cache `spec` names (a directory also on a full disk): where, entries removed."""
    files = 0
    if spec != "off" and not spec.startswith(REDIS_SCHEMES):
        directory = default_directory() if spec == "auto" else Path(spec).expanduser()
        if directory.is_dir():  # its index may not even open before space is freed
            files = remove_value_files(directory)
    backend = open_backend(spec, MAX_RESERVE_BYTES, None)
    if backend is None:
        raise ValueError("--cache off names no cache to clear")
    try:
        return backend.description, max(files, backend.clear())
    finally:
        backend.close()
