"""Objectives through the real server: gRPC and HTTP, the cache, groups cancelled together."""

import json
import time
import urllib.request

import pytest
from google.protobuf import json_format

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client import Client
from filtercast_client.errors import InvalidRequest
from filtercast_client.events import Accepted, FilterImage, Summary
from tests.support.processes import ServerProcess, wait_until

SMALL = {"size": 32, "steps": 3}
TWO = ["block4_conv3:12@center", "block5_conv1:3 - 0.5*block5_conv1:4"]


@pytest.fixture(scope="module")
def cached_server(tmp_path_factory):
    """A real server with a result cache and its HTTP gateway."""
    folder = tmp_path_factory.mktemp("objectives")
    process = ServerProcess(
        "--max-batch",
        "8",
        "--precision",
        "float32",
        "--cache",
        str(folder / "cache"),
        log_dir=folder,
        http=True,
    ).wait_serving()
    yield process
    assert process.stop() == 0


def events_of(address: str, **request) -> list:
    with Client(address) as client:
        return list(client.visualize(preset="robust", seed=1, overrides=SMALL, **request))


def pictures(events: list) -> dict[int, FilterImage]:
    return {e.index: e for e in events if isinstance(e, FilterImage)}


def test_objectives_stream_one_picture_each_and_reproduce(server) -> None:
    first, again = (
        events_of(server.address, objectives=TWO),
        events_of(server.address, objectives=TWO),
    )
    accepted = first[0]
    assert isinstance(accepted, Accepted) and accepted.filters == [0, 1]
    assert accepted.objectives == ["block4_conv3:12@(3,3)", "block5_conv1:3 - 0.5*block5_conv1:4"]
    assert accepted.params["layer"] == "block4_conv3"  # the centre of 7x7 at 32 + 2 x 12 px
    mine, theirs = pictures(first), pictures(again)
    assert [mine[i].objective for i in (0, 1)] == accepted.objectives
    assert [mine[i].target for i in (0, 1)] == [0, 1]
    for index in (0, 1):  # computed twice, the same bytes
        assert (mine[index].image == theirs[index].image).all()
        assert mine[index].loss == theirs[index].loss
    assert isinstance(first[-1], Summary) and first[-1].kept == 2


def test_a_diversity_group_comes_whole_from_the_cache(cached_server) -> None:
    request = {"objectives": ["block5_conv1:7"], "diversity": 3}
    computed = events_of(cached_server.address, **request)
    cached = events_of(cached_server.address, **request)
    assert sorted(e.member for e in pictures(computed).values()) == [0, 1, 2]
    assert cached[0].cached_filters == [0, 1, 2]
    for index, picture in pictures(cached).items():
        assert picture.cached and (picture.image == pictures(computed)[index].image).all()
    # a plain filter request keeps its own keys: the group is not mistaken for filter 7
    plain = events_of(cached_server.address, filters=[7])
    assert plain[0].cached_filters == []


def test_a_cancelled_diversity_group_ends_whole(server) -> None:
    def ended(outcome: str) -> float:
        return server.metric("filtercast_filters_total", outcome=outcome)

    before = {outcome: ended(outcome) for outcome in ("ok", "cancelled")}
    with Client(server.address) as client:
        stream = client.visualize(
            preset="robust",
            objectives=["block5_conv1:9"],
            diversity=4,
            overrides={"size": 48, "steps": 200},
        )
        assert isinstance(next(iter(stream)), Accepted)
        stream.cancel()

    def counts() -> tuple[float, float]:
        return ended("cancelled") - before["cancelled"], ended("ok") - before["ok"]

    # Each picture ends exactly once. A cancel that is seen before the group's last step
    # drops all four; one that is seen only at the stream's first write, on an overloaded
    # machine, finds them all finished (counted ok until the stream's cancel lands).
    wait_until(lambda: sum(counts()) == 4, "each picture of the group has ended", timeout=600)
    time.sleep(1)
    assert sum(counts()) == 4


@pytest.mark.parametrize(
    ("request_fields", "field", "message"),
    [
        ({"objectives": ["block5_conv1:9999"]}, "objectives[0].terms[0]", "out of range"),
        ({"objectives": ["nope:1"]}, "layer", "not found"),
        ({"objectives": ["block5_conv1:1"], "filters": [1]}, "filters", "not both"),
        (
            {"interpolate": "block5_conv1:1..block5_conv1:2", "frames": 99},
            "interpolation.frames",
            "2..16",
        ),
    ],
)
def test_a_bad_objective_says_which_field_to_change(server, request_fields, field, message) -> None:
    with pytest.raises(InvalidRequest, match=message) as raised:
        events_of(server.address, **request_fields)
    assert raised.value.field == field


def test_the_gateway_takes_objectives_in_the_json_mapping(cached_server) -> None:
    body = {
        "model": "vgg16",
        "preset": "PRESET_ROBUST",
        "seed": "2",
        "overrides": SMALL,
        "interpolation": {
            "start": {"terms": [{"layer": "block5_conv1", "index": 1}]},
            "end": {"terms": [{"layer": "block5_conv1", "index": 2}]},
            "frames": 3,
        },
    }
    request = urllib.request.Request(
        cached_server.http_url + "/v1/visualize",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        lines = [json.loads(line) for line in response.read().decode().splitlines() if line]
    events = [
        json_format.ParseDict(line["result"], pb.VisualizeFiltersResponse()) for line in lines
    ]
    accepted = events[0].accepted
    assert list(accepted.objectives) == [
        "block5_conv1:1",
        "0.5*block5_conv1:1 + 0.5*block5_conv1:2",
        "block5_conv1:2",
    ]
    frames = [e.filter for e in events if e.WhichOneof("event") == "filter"]
    assert sorted(f.member for f in frames) == [0, 1, 2] and all(f.image_key for f in frames)
