"""The result cache in the real server (random weights): a cached picture is the one a
fresh computation gives, it survives a restart, replicas share it through a real Redis,
and an operator can clear it."""

import secrets
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from filtercast_client import Accepted, Client, FilterImage, Summary
from filtercast_server.jobs import FilterOutcome
from filtercast_server.png import png_bytes
from tests.support.cache import FLAT, OUTSIDER, old_layout
from tests.support.processes import ServerProcess, wait_until

REQUEST = {"layer": "block3_conv1", "filters": "0:6", "size": 32, "steps": 3, "seed": 5}


def visualize(server: ServerProcess) -> list:
    with Client(server.address) as client:
        return list(client.visualize(precision="float32", **REQUEST))


def pictures(events: list) -> dict[int, np.ndarray | None]:
    return {e.index: e.image for e in events if isinstance(e, FilterImage)}


def same_pictures(a: list, b: list) -> None:
    assert pictures(a).keys() == pictures(b).keys()
    for index, image in pictures(a).items():
        other = pictures(b)[index]
        assert (image is None) == (other is None)
        if image is not None:
            np.testing.assert_array_equal(image, other)


CLI = (sys.executable, "-c", "from filtercast_client.cli import main; main()")


def clear(cache: str) -> str:
    done = subprocess.run(
        [*CLI, "clear-cache", "--cache", cache],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_cached_pictures_equal_fresh_ones_and_survive_a_restart(tmp_path) -> None:
    home = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}  # the default directory, moved here
    first_server = ServerProcess("--cache", "auto", log_dir=tmp_path, env=home).wait_serving()
    try:
        first = visualize(first_server)
    finally:
        assert first_server.stop() == 0  # a clean stop writes what was queued
    assert (tmp_path / "xdg" / "filtercast").is_dir()
    again = ServerProcess("--cache", "auto", log_dir=tmp_path, env=home).wait_serving()
    try:
        second = visualize(again)
        hits = again.metric("filtercast_cache_hits_total")
    finally:
        again.stop()
    fresh_server = ServerProcess(log_dir=tmp_path).wait_serving()  # --cache off
    try:
        fresh = visualize(fresh_server)
    finally:
        fresh_server.stop()
    assert isinstance(second[0], Accepted) and second[0].cached_filters == list(range(6))
    assert isinstance(second[-1], Summary) and second[-1].cached == 6 and hits == 6
    assert not any(e.cached for e in fresh if isinstance(e, FilterImage))
    same_pictures(first, second)
    same_pictures(fresh, second)


@pytest.fixture
def secret_file(tmp_path) -> str:
    path = tmp_path / "cache.secret"
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return str(path)


def test_replicas_share_pictures_through_redis_and_clear_empties_it(
    tmp_path,
    redis_url,
    secret_file,
) -> None:
    shared = ("--cache", redis_url, "--cache-secret-file", secret_file)
    one = ServerProcess(*shared, log_dir=tmp_path).wait_serving()
    two = ServerProcess(*shared, log_dir=tmp_path).wait_serving()
    try:
        computed = visualize(one)
        one.stop()
        shared_events = visualize(two)
        assert "removed 6 cached filters" in clear(redis_url)
        after_clear = visualize(two)
    finally:
        one.stop()
        two.stop()
    assert shared_events[-1].cached == 6
    same_pictures(computed, shared_events)
    assert after_clear[-1].cached == 0


def test_pictures_forged_into_a_shared_redis_are_never_served(
    tmp_path,
    redis_url,
    secret_file,
) -> None:
    """Another tenant of the Redis writes under our keys: in the previous layout with a
    good CRC (what the outside probe did) and in today's with a tag of its own."""
    import redis

    store = redis.Redis.from_url(redis_url)
    server = ServerProcess(
        "--cache", redis_url, "--cache-secret-file", secret_file, log_dir=tmp_path, http=True
    ).wait_serving()
    try:
        computed = visualize(server)

        def stored() -> list[bytes]:
            return sorted(store.scan_iter(match="filtercast:result:*"))

        wait_until(lambda: len(stored()) == 6, "the writer thread stored every filter")
        keys = stored()
        flat = png_bytes(np.full((32, 32, 3), 255, np.uint8))
        for n, key in enumerate(keys):
            index = int(key[-2:], 16) % 6  # any index: the forger does not know which
            if n % 2:
                store.set(key, old_layout(flat, index))
            else:
                name = key.decode().removeprefix("filtercast:result:")
                store.set(key, OUTSIDER.pack(name, FilterOutcome(index, 9.0, False, FLAT, 3, 0.1)))
        for key in keys[:2]:
            url = f"{server.http_url}/v1/images/{key.decode().rsplit(':', 1)[1]}.png"
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url, timeout=30)
            assert refused.value.code == 404
        again = visualize(server)
        forged = server.metric("filtercast_cache_errors_total", operation="forged")
    finally:
        server.stop()
    assert not any(e.cached for e in again if isinstance(e, FilterImage))
    same_pictures(computed, again)
    assert forged >= 3


def test_a_shared_redis_without_a_secret_stops_the_start(tmp_path, redis_url) -> None:
    server = ServerProcess("--cache", redis_url, log_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"exited \(2\)[\s\S]*--cache-secret-file"):
        server.wait_serving()
    server.stop()


def test_an_unusable_cache_directory_stops_the_start(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    server = ServerProcess("--cache", str(blocker / "cache"), log_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"exited \(2\)[\s\S]*--cache"):
        server.wait_serving()
    server.stop()
