"""The directory backend: restarts, eviction, several processes, its own secret, a full
disk (a real small tmpfs, mounted by the test: skipped, saying why, where it cannot
mount) and a directory deleted under it."""

import multiprocessing
import os
import pickle
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from filtercast_server.cache.backends import DiskBackend, open_backend
from filtercast_server.cache.entry import MAX_ENTRY_BYTES, Expectation
from filtercast_server.cache.results import ResultCache
from filtercast_server.cache.secret import CacheSecretError, directory_secret
from filtercast_server.metrics import Metrics
from tests.standin import SECRET
from tests.test_cache import KEY, counter, outcome

MiB = 1024**2
CLI = (sys.executable, "-c", "from filtercast_client.cli import main; main()")


def keys(n: int) -> list[str]:
    return [f"{i:032x}" for i in range(n)]


# --- restarts, eviction, processes ---------------------------------------------------------


def test_a_directory_cache_survives_closing_and_reopening(tmp_path: Path) -> None:
    first = DiskBackend(tmp_path, 10 * MiB, None)
    first.put(KEY, b"picture")
    first.close()
    again = DiskBackend(tmp_path, 10 * MiB, None)
    assert again.contains_many([KEY, "f" * 32]) == {KEY}
    assert again.get_many([KEY, "f" * 32]) == {KEY: b"picture"}
    assert again.clear() == 1 and again.get_many([KEY]) == {}


def test_beyond_its_size_the_oldest_stored_entries_go_first(tmp_path: Path) -> None:
    backend = DiskBackend(tmp_path, MiB, None)
    blob = bytes(100 * 1024)
    names = keys(30)  # 3 MB in all
    for key in names:
        backend.put(key, blob)
    held = backend.get_many(names)
    assert backend.volume() <= 1.3 * MiB
    assert names[0] not in held and names[1] not in held, "the oldest entries were kept"
    assert names[-1] in held


def _write_entries(directory: str, start: int) -> None:
    backend = DiskBackend(Path(directory), 10 * MiB, None)
    for i in range(start, start + 50):
        backend.put(f"{i:032x}", i.to_bytes(4, "little") * 100)
    backend.close()


def test_several_processes_share_one_directory(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_entries, args=(str(tmp_path), s)) for s in (0, 50)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    backend = DiskBackend(tmp_path, 10 * MiB, None)
    found = backend.get_many(f"{i:032x}" for i in range(100))
    assert len(found) == 100
    assert all(found[f"{i:032x}"] == i.to_bytes(4, "little") * 100 for i in range(100))


def test_a_pickled_value_in_the_directory_is_never_loaded(tmp_path: Path) -> None:
    import diskcache

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    with diskcache.Cache(str(tmp_path)) as foreign:  # someone else's write, pickled
        foreign.set(KEY, Boom())
        assert pickle.dumps(Boom())  # it would run on load
    backend = DiskBackend(tmp_path, 10 * MiB, None)
    assert backend.get_many([KEY]) == {}
    assert backend.contains_many([KEY]) == set(), "the refused value was left behind"


def test_reads_stop_at_the_entry_bound(tmp_path: Path) -> None:
    backend = DiskBackend(tmp_path, 64 * MiB, None)
    backend.put(KEY, bytes(MAX_ENTRY_BYTES + 5000))  # nothing of ours is this large
    assert len(backend.get_many([KEY])[KEY]) == MAX_ENTRY_BYTES + 1


def test_an_explicit_unusable_directory_is_an_error_and_off_is_none(tmp_path: Path) -> None:
    assert open_backend("off", MiB, None) is None
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        open_backend(str(blocker / "cache"), MiB, None)


# --- the directory's own secret ---------------------------------------------------------------


def _secret_of(directory: str, results: "multiprocessing.Queue[bytes]") -> None:
    results.put(directory_secret(Path(directory)))


def test_a_directory_makes_its_secret_once_0600_and_keeps_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[bytes] = context.Queue()
    starters = [context.Process(target=_secret_of, args=(str(tmp_path), results)) for _ in "ab"]
    for starter in starters:
        starter.start()
    found = {results.get(timeout=120) for _ in starters}
    for starter in starters:
        starter.join(60)
    assert len(found) == 1, "two processes starting at once made two secrets"
    secret = found.pop()
    assert len(secret) >= 32
    path = tmp_path / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert DiskBackend(tmp_path, MiB, None).own_secret() == secret  # a restart keeps it
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".secret")] == []


def test_a_directory_secret_others_can_read_is_refused(tmp_path: Path) -> None:
    directory_secret(tmp_path)
    (tmp_path / "secret").chmod(0o644)
    with pytest.raises(CacheSecretError, match="readable by others"):
        directory_secret(tmp_path)
    (tmp_path / "secret").unlink()
    (tmp_path / "secret").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CacheSecretError, match="not a regular file"):
        directory_secret(tmp_path)


def test_a_deleted_directory_comes_back_0700_with_its_secret(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    backend = DiskBackend(directory, 10 * MiB, None)
    secret = backend.own_secret()
    backend.put(KEY, b"before")
    shutil.rmtree(directory)  # an operator, or a tmp cleaner
    backend.put("f" * 32, b"after")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "secret").stat().st_mode) == 0o600
    assert directory_secret(directory) == secret, "a restart would see other entries as forged"
    assert backend.get_many([KEY, "f" * 32]) == {"f" * 32: b"after"}
    backend.close()
    assert DiskBackend(directory, 10 * MiB, None).get_many(["f" * 32]) == {"f" * 32: b"after"}


# --- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (needs root, as on CI and the dev machines)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {done.stderr.strip() or 'not root'}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int = 0) -> None:
    """Take the bytes left on the filesystem but `leave`, as another program would."""
    with open(mount / "ballast", "ab", buffering=0) as ballast:
        try:
            while shutil.disk_usage(mount).free > leave:
                ballast.write(bytes(4096))
        except OSError:
            pass
    assert shutil.disk_usage(mount).free <= leave + 4096


def test_a_full_disk_still_serves_what_it_holds(small_disk: Path) -> None:
    backend = DiskBackend(small_disk / "cache", 100 * MiB, None)
    cache = ResultCache(backend, SECRET, metrics := Metrics())
    names = keys(4)
    for index, key in enumerate(names):
        cache.store(key, outcome(index=index))
    assert cache.flush()
    fill(small_disk)
    assert backend.contains_many(names) == set(names)
    assert len(backend.get_many(names)) == 4, "a lookup on a full disk failed"
    for index, key in enumerate(names):
        expect = Expectation(index=index, shape=(8, 8, 3), max_steps=20, max_restarts=1)
        assert cache.fetch({index: key}, expect).keys() == {index}
    assert counter(metrics, "filtercast_cache_errors_total", operation="lookup") == 0
    cache.close()


def test_a_filling_disk_evicts_the_oldest_to_keep_room_and_counts_it(small_disk: Path) -> None:
    backend = DiskBackend(small_disk / "cache", 100 * MiB, None)
    cache = ResultCache(backend, SECRET, metrics := Metrics())
    names = keys(12)
    for key in names[:6]:
        backend.put(key, os.urandom(100 * 1024))
    fill(small_disk, leave=100 * 1024)  # under the reserve (1/20 of 4 MiB) another program left
    for index, key in enumerate(names[6:], 6):
        cache.store(key, outcome(index=index, side=180))  # ~100 KB of noise each
        assert cache.flush()
    held = backend.get_many(names)
    assert names[-1] in held, "the newest store failed instead of making room"
    assert names[0] not in held, "the oldest entry was kept while newer ones needed room"
    assert counter(metrics, "filtercast_cache_evictions_total", reason="free_space") >= 1
    assert counter(metrics, "filtercast_cache_errors_total", operation="store") == 0
    assert cache.picture(names[-1]) is not None
    cache.close()


def test_with_nothing_left_to_evict_stores_rest_and_reads_go_on(small_disk: Path) -> None:
    backend = DiskBackend(small_disk / "cache", 100 * MiB, None)
    cache = ResultCache(backend, SECRET, metrics := Metrics(), retry_seconds=60)
    cache.store(KEY, outcome())
    assert cache.flush()
    fill(small_disk)
    huge = outcome(index=5, side=1100)  # 3.6 MB of noise: more than the whole disk
    cache.store("f" * 32, huge)
    assert cache.flush()
    assert counter(metrics, "filtercast_cache_errors_total", operation="store") == 1
    assert cache.available(), "a failed write stopped the reads"
    expect = Expectation(index=3, shape=(8, 8, 3), max_steps=20, max_restarts=1)
    assert cache.fetch({3: KEY}, expect).keys() == {3}
    cache.close()


def test_clear_cache_empties_a_cache_on_a_full_disk(small_disk: Path) -> None:
    directory = small_disk / "cache"
    backend = DiskBackend(directory, 100 * MiB, None)
    for key in keys(20):
        backend.put(key, os.urandom(100 * 1024))
    backend.close()
    fill(small_disk)
    done = subprocess.run(
        [*CLI, "clear-cache", "--cache", str(directory)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout
    again = DiskBackend(directory, 100 * MiB, None)
    assert again.get_many(keys(20)) == {}
    again.put(KEY, b"room again")
    assert again.get_many([KEY]) == {KEY: b"room again"}
