"""The result cache on a real Debian redis-server (started on a free port by the
`redis_url` fixture; skipped, saying why, where it is not installed: .ci/run installs it)."""

import numpy as np

from filtercast_client.local_server import free_port
from filtercast_server.cache.backends import RedisBackend, open_backend
from filtercast_server.cache.entry import MAX_ENTRY_BYTES, Expectation
from filtercast_server.cache.results import ResultCache
from filtercast_server.observability.metrics import Metrics
from filtercast_server.png import png_pixels
from tests.support.cache import KEY, counter, outcome
from tests.support.standin import SECRET


def test_redis_keeps_entries_with_a_ttl_and_clears_only_its_own(redis_url: str) -> None:
    import redis

    backend = RedisBackend(redis_url, ttl=3600)
    other = redis.Redis.from_url(redis_url)
    other.set("someone-else", b"x")
    backend.put(KEY, b"picture")
    assert backend.get_many([KEY, "f" * 32]) == {KEY: b"picture"}
    assert 3500 < other.ttl("filtercast:result:" + KEY) <= 3600
    assert backend.volume() > 0
    assert backend.clear() == 1
    assert backend.get_many([KEY]) == {}
    assert other.get("someone-else") == b"x"
    backend.close()


def test_a_result_cache_on_redis_round_trips_a_filter(redis_url: str) -> None:
    cache = ResultCache(open_backend(redis_url, 0, 60), SECRET, Metrics())  # type: ignore[arg-type]
    original = outcome(index=4)
    cache.store(KEY, original)
    assert cache.flush()
    with ResultCache(RedisBackend(redis_url, 60), SECRET) as elsewhere:  # another replica
        assert elsewhere.present({4: KEY, 5: "f" * 32}) == {4}
        found = elsewhere.fetch({4: KEY}, Expectation(shape=(8, 8, 3), max_steps=20))
    np.testing.assert_array_equal(png_pixels(found[4].png), original.image)
    cache.backend.clear()
    cache.close()


def test_redis_down_costs_a_counted_miss_not_a_failure() -> None:
    metrics = Metrics()
    cache = ResultCache(RedisBackend(f"redis://127.0.0.1:{free_port()}/0", 60), SECRET, metrics)
    assert cache.present({1: KEY}) == set()
    cache.store(KEY, outcome())
    assert cache.flush()
    assert counter(metrics, "filtercast_cache_errors_total", operation="lookup") == 1
    cache.close()


def test_redis_reads_stop_at_the_entry_bound(redis_url: str) -> None:
    backend = RedisBackend(redis_url, 60)
    backend.put(KEY, bytes(MAX_ENTRY_BYTES + 5000))  # nothing of ours is this large
    assert len(backend.get_many([KEY])[KEY]) == MAX_ENTRY_BYTES + 1
    backend.clear()
    backend.close()
