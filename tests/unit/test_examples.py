"""Dataset examples without TensorFlow: folders, the running top-k, the stored index, settings."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from filtercast_server.cache.backends import DiskBackend
from filtercast_server.cache.entry import CorruptEntryError
from filtercast_server.cache.indexes import IndexCodec, IndexExpectation, IndexStore
from filtercast_server.datasets import Dataset, DatasetImage
from filtercast_server.examples import ExampleIndex, ReceptiveField, TopExamples
from filtercast_server.model_registry import RegistryError, model_configs, parse_models_file
from tests.support.cache import BrokenBackend

SECRET = b"a unit-test secret of 32 bytes!!"
KEY = "0123456789abcdef0123456789abcdef"


def brute_force(values: np.ndarray, depth: int) -> list[list[tuple[float, int]]]:
    """Per channel, the (value, image) of the best `depth` images: value down, image up."""
    ranked = []
    for channel in range(values.shape[1]):
        column = [(float(v), i) for i, v in enumerate(values[:, channel]) if not np.isnan(v)]
        ranked.append(sorted(column, key=lambda pair: (-pair[0], pair[1]))[:depth])
    return ranked


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(
        np.float32,
        st.tuples(st.integers(1, 40), st.integers(1, 6)),
        # few distinct values, so ties are common; an image at NaN is no example
        elements=st.sampled_from([0.0, 1.0, 2.5, -1.0, 7.0, float("nan")]),
    ),
    batch=st.integers(1, 9),
    depth=st.integers(1, 8),
)
def test_the_running_top_k_is_the_brute_force_ranking(
    values: np.ndarray, batch: int, depth: int
) -> None:
    top = TopExamples(values.shape[1], depth)
    for start in range(0, len(values), batch):
        chunk = values[start : start + batch]
        numbers = list(range(start, start + len(chunk)))
        positions = np.tile(np.asarray(numbers, np.int32)[:, None] * 10, (1, values.shape[1]))
        top.add(numbers, chunk, positions)
    for channel, expected in enumerate(brute_force(values, depth)):
        found = [
            (float(v), int(i))
            for v, i in zip(top.values[channel], top.images[channel], strict=True)
            if i >= 0
        ]
        assert found == expected
        assert [int(p) for p in top.positions[channel][: len(found)]] == [i * 10 for _, i in found]


def test_an_index_keeps_only_the_images_it_names_and_reads_back_in_rank_order() -> None:
    listing = [DatasetImage(f"{n}.png", f"{n:064x}") for n in range(5)]
    top = TopExamples(2, depth=3)
    top.add(
        [0, 1, 2, 3],
        np.array([[1, 0], [3, 0], [2, 5], [0, 4]], np.float32),
        np.arange(8).reshape(4, 2),
    )
    index = ExampleIndex.of(
        top, listing, (4, 4), 64, ReceptiveField(16, 16, 0), 4, {"undecodable": 1}, "c" * 64, 1.0
    )
    assert [image.name for image in index.images] == ["0.png", "1.png", "2.png", "3.png"]
    assert [(i.name, v, y, x) for i, v, y, x in index.examples(0, 3)] == [
        ("1.png", 3.0, 0, 2),
        ("2.png", 2.0, 1, 0),
        ("0.png", 1.0, 0, 0),
    ]
    assert [i.name for i, *_ in index.examples(1, 2)] == ["2.png", "3.png"]


def test_fewer_images_than_the_depth_leave_no_phantom_examples() -> None:
    top = TopExamples(1, depth=4)
    top.add([0], np.array([[2.0]], np.float32), np.zeros((1, 1), np.int32))
    index = ExampleIndex.of(
        top, [DatasetImage("a.png", "0" * 64)], (2, 2), 32, ReceptiveField(8, 8, 0), 1, {}, "", 0
    )
    assert len(index.examples(0, 4)) == 1


@pytest.mark.parametrize(
    ("field", "position", "box"),
    [
        (ReceptiveField(132, 16, -58), (7, 7), (54, 54, 132, 132)),  # VGG16 block5_conv1, middle
        (ReceptiveField(132, 16, -58), (0, 13), (0, 150, 74, 74)),  # a corner: clipped
        (ReceptiveField(3, 1, -1), (0, 5), (0, 4, 2, 3)),
        (ReceptiveField(672, 16, -224), (3, 3), (0, 0, 224, 224)),  # the whole image
        (ReceptiveField(3, 1, -1), (0, 300), (0, 223, 2, 1)),  # past the edge: one pixel
    ],
)
def test_a_receptive_field_box_is_clipped_to_the_image(
    field: ReceptiveField, position: tuple[int, int], box: tuple[int, int, int, int]
) -> None:
    assert field.box(*position, side=224) == box


# --- folders ----------------------------------------------------------------------------


def folder_of(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_a_folder_lists_its_images_recursively_in_path_order_and_nothing_else(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"secret")
    root = folder_of(
        tmp_path / "data",
        {
            "b.PNG": b"1",
            "a/z.jpeg": b"2",
            "a/y.JPG": b"3",
            "notes.txt": b"4",
            ".hidden.png": b"5",
            ".cache/c.png": b"6",
        },
    )
    (root / "escape.png").symlink_to(outside)  # a link out of the folder is not followed
    (root / "inside.png").symlink_to(root / "b.PNG")  # one inside is an image like any other
    listing = Dataset("d", root).list()
    assert [image.name for image in listing.images] == [
        "a/y.JPG",
        "a/z.jpeg",
        "b.PNG",
        "inside.png",
    ]
    assert listing.skipped == {}


def test_bounds_skip_and_count_never_fail(tmp_path: Path) -> None:
    root = folder_of(tmp_path, {f"{n}.png": b"x" * (10 if n == 1 else 4) for n in range(5)})
    (tmp_path / "5.png").symlink_to(tmp_path / "gone.png")  # a dangling link: unreadable
    # The count bound is of images kept: a skipped file does not push a good one out.
    listing = Dataset("d", root, max_images=3, max_file_bytes=8).list()
    assert [image.name for image in listing.images] == ["0.png", "2.png", "3.png"]
    assert listing.skipped == {"too_many": 1, "too_large": 1, "unreadable": 1}
    assert Dataset("d", root, max_file_bytes=8).list().skipped == {
        "too_large": 1,
        "unreadable": 1,
    }


def test_the_content_hash_follows_the_bytes_not_the_clock(tmp_path: Path) -> None:
    root = folder_of(tmp_path, {"a.png": b"one", "b.png": b"two"})
    dataset = Dataset("d", root)
    first = dataset.list().content_sha256
    os.utime(root / "a.png", (1, 1))  # touched: same bytes, same index
    assert dataset.list().content_sha256 == first
    (root / "a.png").write_bytes(b"ONE")
    changed = dataset.list().content_sha256
    assert changed != first
    (root / "a.png").rename(root / "c.png")  # same bytes under another name: another index
    assert dataset.list().content_sha256 not in (first, changed)
    assert Dataset("again", root).list().content_sha256 == dataset.list().content_sha256


def test_reading_an_image_that_changed_since_its_listing_fails(tmp_path: Path) -> None:
    root = folder_of(tmp_path, {"a.png": b"one"})
    dataset = Dataset("d", root)
    (image,) = dataset.list().images
    assert dataset.read(image) == b"one"
    (root / "a.png").write_bytes(b"two")
    with pytest.raises(OSError, match="changed since the folder was listed"):
        dataset.read(image)


# --- the stored index -------------------------------------------------------------------


def built_index(channels: int = 3, depth: int = 4) -> ExampleIndex:
    rng = np.random.default_rng(0)
    top = TopExamples(channels, depth)
    top.add(
        list(range(6)), rng.random((6, channels), np.float32), rng.integers(0, 16, (6, channels))
    )
    listing = [DatasetImage(f"img/{n}.jpg", f"{n:064x}") for n in range(6)]
    return ExampleIndex.of(
        top, listing, (4, 4), 64, ReceptiveField(20, 16, -2), 6, {"too_large": 2}, "f" * 64, 3.5
    )


EXPECT = IndexExpectation("f" * 64, channels=3, depth=4, size=64)


def test_a_stored_index_reads_back_exactly() -> None:
    index = built_index()
    codec = IndexCodec(SECRET)
    back = codec.unpack(KEY, codec.pack(KEY, index), EXPECT)
    assert back.images == index.images and back.field == index.field
    assert back.skipped == {"too_large": 2} and back.indexed == 6 and back.seconds == 3.5
    for name in ("values", "image_ids", "positions"):
        np.testing.assert_array_equal(getattr(back, name), getattr(index, name))


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        (lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]), "tag does not verify"),
        (lambda blob: blob[:40], "tag does not verify"),
        (lambda blob: b"FCR2" + blob[4:], "not a stored index"),
        (
            lambda blob: IndexCodec(b"another secret of 32 bytes!!!!!!").pack(KEY, built_index()),
            "tag",
        ),
    ],
)
def test_a_forged_or_damaged_index_is_refused(tamper, words: str) -> None:  # type: ignore[no-untyped-def]
    codec = IndexCodec(SECRET)
    with pytest.raises(CorruptEntryError, match=words):
        codec.unpack(KEY, tamper(codec.pack(KEY, built_index())), EXPECT)


def test_an_index_moved_to_another_key_or_request_is_refused() -> None:
    codec = IndexCodec(SECRET)
    blob = codec.pack(KEY, built_index())
    with pytest.raises(CorruptEntryError, match="tag"):
        codec.unpack("f" * 32, blob, EXPECT)
    for other in (
        IndexExpectation("e" * 64, 3, 4, 64),
        IndexExpectation("f" * 64, 5, 4, 64),
        IndexExpectation("f" * 64, 3, 4, 128),
    ):
        with pytest.raises(CorruptEntryError, match="index of"):
            codec.unpack(KEY, blob, other)


def test_signed_but_inconsistent_contents_are_refused() -> None:
    """Our own tag on contents no build makes (a bug, or a stolen secret): still checked."""
    codec = IndexCodec(SECRET)
    index = built_index()
    bad_ids = index.image_ids.copy()
    bad_ids[0, 0] = len(index.images)
    bad_positions = index.positions.copy()
    bad_positions[1, 1] = 16
    bad_values = index.values.copy()
    bad_values[2, 0] = np.nan
    for field, value, words in (
        ("image_ids", bad_ids, "names no image"),
        ("positions", bad_positions, "outside the map"),
        ("values", bad_values, "not finite"),
    ):
        broken = ExampleIndex(**{**index.__dict__, field: value})
        with pytest.raises(CorruptEntryError, match=words):
            codec.unpack(KEY, codec.pack(KEY, broken), EXPECT)


def test_the_store_keeps_indexes_and_counts_its_faults(tmp_path: Path) -> None:
    faults: list[str] = []
    store = IndexStore(DiskBackend(tmp_path, 1 << 30, None), SECRET, faults.append)
    assert store.load(KEY, EXPECT) is None and faults == []
    store.save(KEY, built_index())
    assert store.load(KEY, EXPECT) is not None
    assert IndexStore(DiskBackend(tmp_path, 1 << 30, None), SECRET, faults.append).load(
        KEY, EXPECT
    ), "a restarted server reads it back"
    assert (
        IndexStore(DiskBackend(tmp_path, 1 << 30, None), b"x" * 32, faults.append).load(KEY, EXPECT)
        is None
    )
    assert faults == ["index_corrupt"]
    broken = IndexStore(BrokenBackend(), SECRET, faults.append)
    assert broken.load(KEY, EXPECT) is None
    broken.save(KEY, built_index())
    assert faults[1:] == ["index_lookup", "index_store"]


# --- settings ---------------------------------------------------------------------------


def test_dataset_flags_give_every_model_the_folder(tmp_path: Path) -> None:
    configs = model_configs(["vgg16,vgg19"], datasets=[f"Photos={tmp_path}"])
    assert [c.datasets for c in configs] == [(("photos", tmp_path),)] * 2


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("photos", "use NAME=DIR"),
        ("bad name={tmp}", "use a-z, 0-9"),
        ("photos={tmp}/missing", "is not a folder"),
    ],
)
def test_bad_dataset_flags_say_what_to_change(tmp_path: Path, value: str, words: str) -> None:
    with pytest.raises(RegistryError, match=re.escape(words)):
        model_configs(["vgg16"], datasets=[value.format(tmp=tmp_path)])


def test_a_models_file_gives_a_model_its_own_folders(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "fundus").mkdir()
    path = tmp_path / "models.toml"
    path.write_text('[models.vgg16.datasets]\nfundus = "fundus"\n[models.vgg19]\n')
    configs = model_configs([], str(path), datasets=[f"shared={tmp_path / 'shared'}"])
    assert [(c.name, [n for n, _ in c.datasets]) for c in configs] == [
        ("vgg16", ["fundus", "shared"]),
        ("vgg19", ["shared"]),
    ]
    assert configs[0].datasets[0][1] == tmp_path / "fundus"  # relative to the file
    path.write_text('[models.vgg16]\ndatasets = "fundus"\n')
    with pytest.raises(RegistryError, match="datasets must be a table"):
        parse_models_file(path)
    path.write_text('[models.vgg16.datasets]\nfundus = "fundus"\n')
    with pytest.raises(RegistryError, match="named twice: fundus"):
        model_configs([], str(path), datasets=[f"fundus={tmp_path}"])


def test_hostile_entries_are_skipped_not_waited_for(tmp_path: Path) -> None:
    root = folder_of(tmp_path, {"good.png": b"fine"})
    os.mkfifo(root / "pipe.png")  # reading it would wait for a writer forever
    (root / "dir.jpg").mkdir()  # a folder named like an image: not listed as one
    odd = os.fsencode(root) + b"/caf\xe9.png"  # not UTF-8: no proto string can carry it
    with open(odd, "wb") as file:
        file.write(b"latin-1 name")
    listing = Dataset("d", root).list()
    assert [image.name for image in listing.images] == ["good.png"]
    assert listing.skipped == {"not_a_file": 1, "bad_name": 1}


def test_a_file_swapped_after_its_listing_is_refused_without_blocking(tmp_path: Path) -> None:
    root = folder_of(tmp_path, {"a.png": b"one"})
    dataset = Dataset("d", root, max_file_bytes=8)
    (image,) = dataset.list().images
    (root / "a.png").unlink()
    os.mkfifo(root / "a.png")
    with pytest.raises(OSError, match="not a regular file"):
        dataset.read(image)
    (root / "a.png").unlink()
    (root / "a.png").write_bytes(b"grew past the bound")  # the size check is the read's own
    with pytest.raises(OSError, match="over 8 bytes"):
        dataset.read(image)


def test_a_symlink_loop_or_a_swap_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    root = folder_of(tmp_path / "data", {"a.png": b"one", "b.png": b"two"})
    (root / "loop.png").symlink_to(root / "loop.png")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"two")  # the same bytes as b.png: the hash alone cannot tell
    dataset = Dataset("d", root)
    listing = dataset.list()
    assert [i.name for i in listing.images] == ["a.png", "b.png"]
    assert listing.skipped == {"unreadable": 1}
    (root / "b.png").unlink()
    (root / "b.png").symlink_to(outside)  # swapped after the listing
    with pytest.raises(OSError, match="leads out of the folder"):
        dataset.read(listing.images[1])


def test_a_file_rewritten_with_the_same_size_and_time_is_hashed_again(tmp_path: Path) -> None:
    root = folder_of(tmp_path, {"a.png": b"one"})
    dataset = Dataset("d", root)
    first = dataset.list()
    stat = (root / "a.png").stat()
    (root / "a.png").write_bytes(b"two")  # same size
    os.utime(root / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    assert dataset.list().content_sha256 != first.content_sha256


def test_a_build_step_never_waits_long_for_slow_files(tmp_path: Path) -> None:
    """A file still decoding holds a step back at most BATCH_SECONDS; the device waits."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    from filtercast_server.examples import ExamplesPlan
    from filtercast_server.indexing import IndexBuilder
    from tests.support.standin import IndexMaps, Model

    for n in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * n + 10, np.uint8)).save(tmp_path / f"{n}.png")
    (tmp_path / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # undecodable
    released = threading.Event()

    class Slow(Dataset):
        def read(self, image: DatasetImage) -> bytes:
            if image.name == "0.png":
                released.wait(30)  # a file on a slow disk
            return super().read(image)

    dataset = Slow("d", tmp_path)
    plan = ExamplesPlan("vgg16", "block5_conv1", "d", 64, (0,), 4)
    engine = IndexMaps()
    with ThreadPoolExecutor(2) as decoder:
        builder = IndexBuilder(plan, dataset, dataset.list(), Model(), engine, decoder)
        builder.field = ReceptiveField(16, 16, 0)
        assert builder.step() and engine.images == 0, "it waited, then let the worker go"
        released.set()
        while builder.step():
            pass
    index = builder.index()
    assert engine.images == 3 and index.indexed == 3 and index.skipped == {"undecodable": 1}
    assert [i.name for i, *_ in index.examples(0, 4)] == ["2.png", "1.png", "0.png"]
