"""Where cached entries live: a local directory (diskcache) or Redis.

Both take and give opaque bytes under a cache key; neither knows what an
entry holds. Every method may raise: results.ResultCache turns a fault into
a counted, logged miss, never a failed request.

- DiskBackend: diskcache (SQLite index + files) in a directory. Evicts the
  least recently used entries once `max_bytes` is exceeded, survives
  restarts, and is safe with several processes on one directory.
- RedisBackend: one Redis for replicas that share results. Entries expire
  after `ttl` seconds; the memory bound is Redis's own (`maxmemory` with an
  `allkeys-lru` policy), which it checks and warns about at start.
"""

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
REDIS_PREFIX = "filtercast:result:"
REDIS_TIMEOUT_SECONDS = 0.5  # per command, no retry: a dead Redis costs one timeout, then a rest
DISK_TIMEOUT_SECONDS = 2.0  # SQLite lock wait before a lookup counts as a fault


class RefusedValueError(ValueError):
    """A stored value of a kind this cache never writes (a pickle): never loaded."""


class Backend(Protocol):
    """Bytes by key."""

    description: str

    def contains_many(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are stored (without reading them)."""
        ...

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The entries found among `keys`."""
        ...

    def put(self, key: str, blob: bytes) -> None:
        """Store (or replace) one entry."""
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


class DiskBackend:
    """diskcache in `directory`, LRU-evicted above `max_bytes`, entries expiring after `ttl`."""

    def __init__(self, directory: Path, max_bytes: int, ttl: float | None) -> None:
        import diskcache

        class BytesOnly(diskcache.Disk):
            """Values are bytes: a pickled row (someone else's write) is refused, never loaded."""

            def fetch(self, mode: int, filename: str, value: object, read: bool) -> object:
                if mode == diskcache.core.MODE_PICKLE:
                    raise RefusedValueError("a pickled value in the cache directory")
                return super().fetch(mode, filename, value, read)

        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.description = f"directory {directory}"
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._cache = diskcache.Cache(
            str(directory),
            size_limit=max_bytes,
            eviction_policy="least-recently-used",
            timeout=DISK_TIMEOUT_SECONDS,
            statistics=False,
            cull_limit=1,  # diskcache's default (10 a time) empties a small cache in one go
            disk=BytesOnly,
        )

    def contains_many(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are stored (an index lookup each; no value read)."""
        return {key for key in keys if key in self._cache}

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The entries found among `keys` (each read refreshes its LRU time)."""
        found = {}
        for key in keys:
            try:
                blob = self._cache.get(key)
            except RefusedValueError:  # not ours: dropped, like a corrupt entry
                log.warning("%s: dropped a pickled value under %s", self.description, key)
                self._cache.delete(key)
                continue
            if isinstance(blob, bytes):
                found[key] = blob
        return found

    def put(self, key: str, blob: bytes) -> None:
        """Store one entry; the least recently used go when the size limit is passed."""
        self._cache.set(key, blob, expire=self.ttl)
        if self._cache.volume() > self.max_bytes:  # a large entry: one cull was not enough
            self._cache.cull()

    def delete(self, key: str) -> None:
        """Drop one entry."""
        self._cache.delete(key)

    def clear(self) -> int:
        """Drop every entry."""
        return int(self._cache.clear())

    def volume(self) -> int:
        """Bytes on disk (index and files)."""
        return int(self._cache.volume())

    def close(self) -> None:
        """Close the index."""
        self._cache.close()


class RedisBackend:
    """Entries under `filtercast:result:<key>` in the Redis at `url`, expiring after `ttl`."""

    def __init__(self, url: str, ttl: float | None) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.ttl = None if ttl is None else max(1, round(ttl))
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
        """The entries found among `keys`, in one round trip."""
        keys = list(keys)
        if not keys:
            return {}
        values: list[Any] = self._redis.mget([REDIS_PREFIX + key for key in keys])
        return {key: bytes(v) for key, v in zip(keys, values, strict=True) if v is not None}

    def put(self, key: str, blob: bytes) -> None:
        """Store one entry with the TTL."""
        self._redis.set(REDIS_PREFIX + key, blob, ex=self.ttl)

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
