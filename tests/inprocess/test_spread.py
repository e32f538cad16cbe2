"""One request spread over several servers (stand-in engines): dealt out, merged, retried.

Client.spread deals the filters round-robin over every server behind the
client's addresses and merges the streams into the one a single server sends.
"""

import threading
import time

import numpy as np
import pytest

from filtercast_client import Accepted, Client, FilterImage, GridImage, InvalidRequest, Summary
from filtercast_client.errors import ProtocolError
from filtercast_server.cache.backends import DiskBackend
from tests.support.standin import Engine, StandIn

FILTERS = 12
REQUEST = {"layer": "block5_conv1", "steps": 4, "seed": 7}


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def test_the_filters_are_dealt_over_every_server_and_merged_into_one_stream() -> None:
    with StandIn() as a, StandIn() as b:
        with Client([a.address, b.address]) as client:
            events = list(client.spread(filters=f"0:{FILTERS}", **REQUEST))
        dealt = sorted(a.engine.finished), sorted(b.engine.finished)
        with Client(a.address) as client:
            alone = list(client.visualize(filters=f"0:{FILTERS}", **REQUEST))
    assert kinds(events)[0] == "Accepted" and kinds(events)[-2:] == ["GridImage", "Summary"]
    accepted = events[0]
    assert isinstance(accepted, Accepted) and accepted.filters == list(range(FILTERS))
    assert accepted.request_id.count(",") == 1  # both servers' requests
    images = [e for e in events if isinstance(e, FilterImage)]
    assert sorted(i.index for i in images) == list(range(FILTERS))
    assert [i.done for i in images] == list(range(1, FILTERS + 1))
    assert {i.total for i in images} == {FILTERS}
    assert dealt == (list(range(0, FILTERS, 2)), list(range(1, FILTERS, 2)))  # i to server i % 2
    grid, summary = events[-2], events[-1]
    single = next(e for e in alone if isinstance(e, GridImage))
    assert isinstance(grid, GridImage) and grid.order == single.order and grid.n == single.n
    np.testing.assert_array_equal(grid.image, single.image)  # the same rule, the same grid
    expected = next(e for e in alone if isinstance(e, Summary))
    assert isinstance(summary, Summary)
    assert (summary.kept, summary.dead) == (expected.kept, expected.dead)


def test_a_shard_whose_server_is_gone_is_asked_of_another() -> None:
    with StandIn(engine=Engine(step_seconds=0.01, max_batch=2)) as a:
        b = StandIn(engine=Engine(step_seconds=0.01, max_batch=2)).__enter__()
        stopped = threading.Event()
        with Client([a.address, b.address]) as client:
            events = []
            for event in client.spread(filters=f"0:{FILTERS}", **REQUEST):
                events.append(event)
                if isinstance(event, FilterImage) and not stopped.is_set():
                    b.__exit__(None, None, None)  # b dies with most of its share undone
                    stopped.set()
    images = [e for e in events if isinstance(e, FilterImage)]
    assert sorted(i.index for i in images) == list(range(FILTERS))  # each once, none lost
    assert set(a.engine.finished) | set(b.engine.finished) >= set(range(FILTERS))
    assert any(i % 2 for i in a.engine.finished)  # a took over b's filters
    assert isinstance(events[-1], Summary) and events[-1].kept + events[-1].dead == FILTERS


def test_a_server_down_from_the_start_leaves_its_share_to_the_others() -> None:
    with StandIn() as a:
        down = StandIn().__enter__()
        address = down.address
        down.__exit__(None, None, None)
        with Client([a.address, address]) as client:
            events = list(client.spread(filters=f"0:{FILTERS}", **REQUEST))
    assert sorted(e.index for e in events if isinstance(e, FilterImage)) == list(range(FILTERS))
    assert sorted(a.engine.finished) == list(range(FILTERS))


def test_leaving_the_stream_cancels_every_shard() -> None:
    engines = [Engine(step_seconds=0.02, max_batch=1) for _ in range(2)]
    with StandIn(engine=engines[0]) as a, StandIn(engine=engines[1]) as b:
        client = Client([a.address, b.address])
        for event in client.spread(filters="0:40", **REQUEST):
            if isinstance(event, FilterImage):
                break
        before = [len(e.finished) for e in engines]
        time.sleep(0.5)  # ~6 filters' time each: a server still working would go on
        after = [len(e.finished) for e in engines]
        client.close()
    assert all(late - early <= 1 for early, late in zip(before, after, strict=True))
    assert sum(after) < 40


def test_a_bad_request_is_raised_and_stops_every_shard() -> None:
    with StandIn() as a, StandIn() as b, Client([a.address, b.address]) as client:
        spread = client.spread(filters="60:70", **REQUEST)  # the layer has 64 filters
        with pytest.raises(InvalidRequest, match="filter"):
            list(spread)


@pytest.mark.parametrize("store", ["redis", "directory"])
def test_servers_that_share_a_cache_never_compute_a_filter_twice(store, request, tmp_path) -> None:
    if store == "redis":  # each replica its own connection to one Redis, as in production
        from filtercast_server.cache.backends import RedisBackend

        url = request.getfixturevalue("redis_url")
        backends = RedisBackend(url, None), RedisBackend(url, None)
    else:
        backends = (DiskBackend(tmp_path, 1 << 30, None),) * 2
    with StandIn(cache_backend=backends[0]) as a, StandIn(cache_backend=backends[1]) as b:
        with Client([a.address, b.address]) as client:
            list(client.spread(filters=f"0:{FILTERS}", **REQUEST))
        a.cache.flush()
        b.cache.flush()
        computed = sorted(a.engine.finished + b.engine.finished)
        with Client([b.address, a.address]) as client:  # each now gets the other's filters
            events = list(client.spread(filters=f"0:{FILTERS}", **REQUEST))
    assert computed == list(range(FILTERS))
    assert sorted(a.engine.finished + b.engine.finished) == computed  # nothing computed again
    images = [e for e in events if isinstance(e, FilterImage)]
    assert len(images) == FILTERS and all(i.cached for i in images)


def test_servers_with_different_weights_are_refused() -> None:
    with StandIn() as a, StandIn() as b:
        b.servicer.models["vgg16"].weights_sha256 = "f" * 64
        client = Client([a.address, b.address])
        with pytest.raises(ProtocolError, match="different weights"):
            list(client.spread(filters=f"0:{FILTERS}", **REQUEST))
        client.close()


def test_a_spread_names_its_filters() -> None:
    with Client("127.0.0.1:1") as client:
        with pytest.raises(ValueError, match="closed ranges"):
            client.spread(filters="0:")
        with pytest.raises(ValueError, match="one server"):
            client.spread(filters="0:4", objectives=["block5_conv1:1"])


def test_the_cli_spreads_one_request_into_one_folder(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from filtercast_client.cli import main

    with StandIn() as a, StandIn() as b:
        args = ["visualize", "--server", a.address, "--server", b.address, "--spread"]
        args += ["--filters", f"0:{FILTERS}", "--steps", "4", "--out", str(tmp_path / "out")]
        result = CliRunner().invoke(main, args)
        refused = CliRunner().invoke(main, [*args[:6], "--filters", "8:"])
    assert result.exit_code == 0, result.output
    assert a.engine.finished and b.engine.finished
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["filters"]) == FILTERS
    assert (tmp_path / "out" / "grid.png").exists()
    assert refused.exit_code == 2 and "closed ranges" in refused.output


def test_cancel_from_another_thread_ends_the_iteration_quietly() -> None:
    engines = [Engine(step_seconds=0.02, max_batch=1) for _ in range(2)]
    with StandIn(engine=engines[0]) as a, StandIn(engine=engines[1]) as b:
        client = Client([a.address, b.address])
        spread = client.spread(filters="0:40", **REQUEST)
        threading.Timer(0.3, spread.cancel).start()
        events = list(spread)  # returns once cancelled: no error, no summary
        client.close()
    assert events and not any(isinstance(e, Summary) for e in events)
    assert sum(len(e.finished) for e in engines) < 40


def test_a_bad_argument_is_refused_before_any_server_is_asked() -> None:
    with StandIn() as a, Client(a.address) as client, pytest.raises(InvalidRequest, match="precis"):
        client.spread(filters="0:4", precision="float8")
    assert not a.engine.finished
