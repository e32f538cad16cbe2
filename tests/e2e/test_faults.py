"""Faults and hostile input: disconnects, a killed server, malformed, oversized and
fuzzed requests. The server never crashes and answers every request with a status."""

import signal
import subprocess
import sys
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.client import Client, FilterImage, Summary
from tests.support.processes import ServerProcess

METHOD = "/filtercast.v1.FilterVisualizerService/VisualizeFilters"
SERVING = 1


def settle(server: ServerProcess, timeout: float = 30) -> None:
    """Wait until nothing is queued or in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            server.metric("filtercast_queued_filters") == 0
            and server.metric("filtercast_requests_in_flight") == 0
        ):
            return
        time.sleep(0.2)
    pytest.fail("the server kept queued jobs or open streams")


def test_client_killed_mid_stream_leaks_nothing(server) -> None:
    cancelled_before = server.metric("filtercast_filters_total", outcome="cancelled")
    code = (
        "from filtercast_client.client import Client, FilterImage\n"
        f"c = Client({server.address!r})\n"
        "for e in c.visualize(filters='0:64', overrides={'size': 32, 'steps': 8}):\n"
        "    if isinstance(e, FilterImage):\n"
        "        print('first', flush=True)\n"
        "        break\n"
        "import time; time.sleep(60)\n"
    )
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert client.stdout.readline().strip() == "first"
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    settle(server)
    assert server.metric("filtercast_filters_total", outcome="cancelled") > cancelled_before
    with Client(server.address) as c:  # and it still serves
        assert isinstance(
            list(c.visualize(filters=[0], overrides={"size": 32, "steps": 1}))[-1], Summary
        )


def test_server_killed_mid_stream_then_restarted(tmp_path) -> None:
    first = ServerProcess("--max-batch", "4", log_dir=tmp_path).wait_serving()
    with Client(first.address) as client:
        stream = iter(client.visualize(filters="0:64", overrides={"size": 32, "steps": 8}))
        while not isinstance(next(stream), FilterImage):
            pass
        first.process.send_signal(signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            list(stream)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 10
    first.stop()
    second = ServerProcess("--max-batch", "4", log_dir=tmp_path).wait_serving()
    try:
        with Client(second.address) as client:
            events = list(client.visualize(filters=[1], overrides={"size": 32, "steps": 1}))
            assert isinstance(events[-1], Summary)
    finally:
        assert second.stop() == 0


def raw_stream(server: ServerProcess, payload: bytes, max_send: int | None = None) -> grpc.RpcError:
    options = [("grpc.max_send_message_length", max_send)] if max_send else []
    with grpc.insecure_channel(server.address, options=options) as channel:
        call = channel.unary_stream(METHOD, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            list(call(payload, timeout=30))
    return info.value


def test_malformed_bytes_are_invalid_argument_and_the_server_lives(server) -> None:
    error = raw_stream(server, b"\xff\xff\xff\xff garbage")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not decode the request as filtercast.v1.VisualizeFiltersRequest" in (
        error.details()
    )
    assert server.health() == SERVING


def rss(server: ServerProcess) -> float:
    return server.metric("process_resident_memory_bytes")


def test_huge_filter_selections_are_refused_before_anything_is_built(server) -> None:
    before = rss(server)
    # Six bytes on the wire that once expanded to 2^31 indices and OOM-killed the server.
    tiny = pb.VisualizeFiltersRequest(
        filters=pb.FilterSelection(range=pb.FilterRange(start=0, stop=2**31 - 1))
    )
    assert len(tiny.filters.SerializeToString()) <= 10
    error = raw_stream(server, tiny.SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "this layer has 512 filters: 0..511" in error.details()
    # A long list under the request size limit: counted before it is looked at.
    listed = pb.VisualizeFiltersRequest(
        layer="block1_conv1", filters=pb.FilterSelection(list=pb.FilterList(indices=[1] * 200_000))
    )
    error = raw_stream(server, listed.SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "200000 filter indices listed; at most" in error.details()
    # A 57 MB list never reaches the servicer: requests are capped at 8 MiB + 64 KiB.
    huge = pb.VisualizeFiltersRequest(
        filters=pb.FilterSelection(list=pb.FilterList(indices=[2**30] * 10_000_000))
    ).SerializeToString()
    error = raw_stream(server, huge, max_send=128 * 1024 * 1024)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.health() == SERVING
    assert rss(server) < before + 200 * 2**20  # nothing proportional to the asks was built


def test_oversized_request_is_refused(server) -> None:
    payload = pb.VisualizeFiltersRequest(model="m" * (65 * 1024 * 1024)).SerializeToString()
    error = raw_stream(server, payload, max_send=128 * 1024 * 1024)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.health() == SERVING


def test_a_long_name_is_shortened_in_the_error(server) -> None:
    with Client(server.address) as client, pytest.raises(grpc.RpcError) as info:
        list(client.visualize(model="m" * 1_000_000))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "(1000000 characters)" in info.value.details() and len(info.value.details()) < 500


optional_int = st.none() | st.integers(-(2**31), 2**31 - 1) | st.integers(-5, 600)
optional_float = st.none() | st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def requests(draw: st.DrawFn) -> pb.VisualizeFiltersRequest:
    names = st.sampled_from(["", "vgg16", "vgg19", "resnet50v2"]) | st.text(max_size=40)
    layers = st.sampled_from(["", "block5_conv1", "block1_conv1", "conv3_block4_out"]) | st.text(
        max_size=40
    )
    request = pb.VisualizeFiltersRequest(
        model=draw(names),
        layer=draw(layers),
        preset=draw(st.integers(-2, 5)),
        precision=draw(st.integers(-2, 5)),
        image_format=draw(st.integers(-2, 4)),
        keep_dead_filters=draw(st.booleans()),
    )
    which = draw(st.sampled_from(["none", "range", "list"]))
    if which == "range":
        request.filters.range.start = draw(st.integers(-(2**31), 2**31 - 1) | st.integers(-3, 600))
        request.filters.range.stop = draw(st.integers(-(2**31), 2**31 - 1) | st.integers(-3, 600))
    elif which == "list":
        request.filters.list.indices.extend(draw(st.lists(st.integers(-10, 1000), max_size=20)))
    for name in ("size", "steps", "upscale_rounds", "border", "crop"):
        value = draw(optional_int)
        if value is not None:
            setattr(request.overrides, name, value)
    for name in ("step_size", "upscale_factor", "deprocess_std"):
        value = draw(optional_float)
        if value is not None:
            setattr(request.overrides, name, value)
    seed = draw(st.none() | st.integers(0, 2**64 - 1))
    if seed is not None:
        request.seed = seed
    request.grid.disabled = draw(st.booleans())
    for name in ("n", "margin"):
        value = draw(optional_int)
        if value is not None:
            setattr(request.grid, name, value)
    return request


ANSWERS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(request=requests())
def test_fuzzed_requests_always_get_an_answer(server, request) -> None:
    with Client(server.address) as client:
        call = client.stub.VisualizeFilters(request, timeout=30)
        try:
            first = next(call)
            assert first.WhichOneof("event") == "accepted"
            call.cancel()  # a valid request: accepted is the answer; stop the work
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                assert error.code() in ANSWERS, (error.code(), error.details())
                assert error.details()


def test_the_server_survived_the_fuzzing(server) -> None:
    settle(server, timeout=120)
    assert server.health() == SERVING
    assert server.process.poll() is None
