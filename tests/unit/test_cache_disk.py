"""The directory backend: restarts, eviction, several processes, its own secret and a
directory deleted under it (a full disk: e2e/test_cache_full_disk.py)."""

import multiprocessing
import pickle
import shutil
import stat
from pathlib import Path

import pytest

from filtercast_server.cache.backends import DiskBackend, open_backend
from filtercast_server.cache.entry import MAX_ENTRY_BYTES
from filtercast_server.cache.secret import CacheSecretError, directory_secret
from tests.support.cache import KEY

MiB = 1024**2


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
