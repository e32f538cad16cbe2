"""The servicer in-process on a stand-in engine: validation, error details, event order,
cancellation, discovery, reflection and addresses, through the real client. No TensorFlow."""

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from filtercast import contract
from filtercast.v1 import filtercast_pb2 as pb
from filtercast.v1 import filtercast_pb2_grpc as pb_grpc
from filtercast_client import (
    Accepted,
    AsyncClient,
    Client,
    FilterImage,
    GridImage,
    InvalidRequest,
    NotFound,
    Overloaded,
    Summary,
    Unavailable,
)
from filtercast_server.params import Limits
from filtercast_server.serving.admission import NewStepBudget
from filtercast_server.serving.streams import Stream
from filtercast_server.targets import MAX_GROUP
from tests.support.processes import has_ipv6_loopback
from tests.support.standin import CHANNELS, Engine, StandIn


@pytest.fixture(scope="module")
def standin():
    with StandIn() as server:
        yield server


def test_events_come_in_contract_order(standin) -> None:
    with Client(standin.address) as client:
        events = list(client.visualize(filters="0:5,20", size=32, steps=2, seed=3))
    accepted, *filters, grid, summary = events
    assert isinstance(accepted, Accepted) and accepted.filters == [0, 1, 2, 3, 4, 20]
    assert (accepted.weights_source, accepted.device) == ("random", "stand-in device")
    assert accepted.params["size"] == 32 and accepted.seed == 3
    assert all(isinstance(f, FilterImage) for f in filters)
    assert sorted(f.index for f in filters) == [0, 1, 2, 3, 4, 20]
    assert [f.done for f in filters] == [1, 2, 3, 4, 5, 6]
    assert next(f for f in filters if f.index == 3).dead  # the stand-in's dead filter
    assert isinstance(grid, GridImage) and 3 not in grid.order
    assert isinstance(summary, Summary) and (summary.kept, summary.dead) == (5, 1)


@pytest.mark.parametrize(
    ("request_kwargs", "field", "words"),
    [
        ({"size": 4}, "overrides.size", "size=4 is out of range"),
        ({"steps": 10_000}, "overrides.steps", "steps=10000 is out of range"),
        ({"filters": "60:70"}, "filters", f"this layer has {CHANNELS} filters"),
        ({"filters": [1, 64]}, "filters", "filter 64 is out of range"),
        ({"layer": "nope"}, "layer", "layer 'nope' not found"),
        ({"grid_n": 0}, "grid.n", "grid_n=0 is out of range"),
        ({"overrides": {"crop": 100}, "size": 32}, "overrides.crop", "crop=100"),
        ({"overrides": {"jitter": 4}}, "overrides.jitter", "does not apply to preset classic"),
        (
            {"preset": "robust", "overrides": {"revive": 1}},
            "overrides.revive",
            "does not apply to preset robust",
        ),
        (
            {"overrides": {"revive": 1}, "keep_dead_filters": True},
            "overrides.revive",
            "finds none dead",
        ),
        (
            {"preset": "robust", "overrides": {"objective": "logits"}},
            "overrides.objective",
            "activation, pre_activation",
        ),
        (  # an error never echoes a huge value back (trailers are limited to 16 KiB)
            {"preset": "robust", "overrides": {"objective": "x" * 100_000}},
            "overrides.objective",
            "... (100000 characters)",
        ),
        (
            {"preset": "robust", "overrides": {"scale_jitter": 2.0}},
            "overrides.scale_jitter",
            "valid: 0.0..0.5",
        ),
    ],
)
def test_invalid_requests_name_their_field(standin, request_kwargs, field, words) -> None:
    with Client(standin.address) as client, pytest.raises(InvalidRequest) as caught:
        list(client.visualize(**request_kwargs))
    error = caught.value
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT == error.code()
    assert error.field == field and words in error.message


def test_field_details_reach_a_raw_grpc_client(standin) -> None:
    """What any language's client gets: a google.rpc.Status in the trailers."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    with grpc.insecure_channel(standin.address) as channel:
        stub = pb_grpc.FilterVisualizerServiceStub(channel)
        request = pb.VisualizeFiltersRequest(preset=99)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.VisualizeFilters(request, timeout=30))
    status = rpc_status.from_call(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    violation = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(violation)
    assert violation.field_violations[0].field == "preset"
    assert "CLASSIC" in violation.field_violations[0].description


def test_unknown_model_is_not_found_with_the_resource(standin) -> None:
    with Client(standin.address) as client:
        with pytest.raises(NotFound) as caught:
            list(client.visualize(model="nosuch"))
        assert caught.value.resource == ("model", "nosuch")
        with pytest.raises(NotFound) as described:
            client.describe("nosuch")
        assert described.value.resource == ("model", "nosuch")
        assert "vgg16" in described.value.message


def test_while_the_models_load_listing_answers_and_the_rest_waits() -> None:
    """The ports open before the models are loaded: ListModels gives the presets and
    limits but no model, the other calls are UNAVAILABLE with a retry hint."""
    with StandIn(loading=True) as server, Client(server.address, attempts=1) as client:
        info = client.server_info()
        assert info.models == [] and "robust" in info.presets and info.limits["max_filters"]
        with pytest.raises(Unavailable, match="models are still loading") as loading:
            client.describe("vgg16")
        assert loading.value.retry_after == 5
        with pytest.raises(Unavailable, match="still loading"):
            list(client.visualize(filters="0:2", size=32, steps=1))
        server.front.open(server.servicer)
        assert [m.name for m in client.list_models()] == ["vgg16"]
        assert isinstance(list(client.visualize(filters="0:2", size=32, steps=1))[-1], Summary)
    assert (
        server.metrics.registry.get_sample_value(
            "filtercast_rejected_total", {"reason": "not_ready"}
        )
        == 2
    )


def test_a_full_queue_is_overloaded_with_quota_and_retry_hint() -> None:
    with (
        StandIn(queue_limit=4) as server,
        Client(server.address, attempts=1) as client,
        pytest.raises(Overloaded) as caught,
    ):
        list(client.visualize(filters="0:8"))
    error = caught.value
    assert error.retry_after is not None and error.retry_after > 0
    assert error.quota is not None and error.quota.endswith("queue")


def test_a_client_may_ask_for_only_so_many_new_compiled_steps_a_minute() -> None:
    kinds = [
        "block5_conv1:1",
        "block5_conv1:1@center",
        "layer(block5_conv1)",
        "block5_conv1:1 - block5_conv1:2",
    ]
    with StandIn(new_steps=NewStepBudget(3)) as server, Client(server.address) as client:
        for kind in kinds[:3]:  # each a new loss structure: a new compiled step
            assert isinstance(list(client.visualize(objectives=[kind], steps=2))[-1], Summary)
        with pytest.raises(Overloaded) as caught:
            list(client.visualize(objectives=[kinds[3]], steps=2))
        error = caught.value
        assert "had not compiled" in str(error) and "repeat a kind" in str(error)
        assert error.retry_after is not None and 0 < error.retry_after <= 20
        assert error.quota == "client:127.0.0.1/client_new_steps"
        # Work of a step already compiled costs nothing, whatever its filters or seed.
        for seed in range(5):
            events = list(client.visualize(objectives=["block5_conv1:9"], steps=2, seed=seed))
            assert isinstance(events[-1], Summary)
        # Another precision is another step.
        with pytest.raises(Overloaded):
            list(client.visualize(objectives=[kinds[0]], steps=2, precision="bfloat16"))


def test_discovery_gives_presets_and_limits(standin) -> None:
    with Client(standin.address) as client:
        info = client.server_info()
        models = client.list_models()
    assert [m.name for m in models] == ["vgg16"] == [m.name for m in info.models]
    assert models[0].layers[0].channels == CHANNELS and models[0].auto_precision == "float32"
    classic = info.presets["classic"]
    assert (classic.defaults["size"], classic.defaults["steps"]) == (128, 20)
    assert classic.defaults["layer"] == "block5_conv1" and classic.default_filters == 200
    assert info.presets["upscale"].default_filters is None
    robust = info.presets["robust"]
    assert robust.defaults["parameterization"] == "fourier" and robust.default_filters == 64
    assert (robust.defaults["pad"], robust.defaults["jitter"]) == (12, 8)
    assert info.limits["max_size"] == Limits.max_size
    assert info.limits["max_filters"] == Limits.max_filters
    assert info.limits["max_message_bytes"] == 64 * 1024 * 1024
    # The objectives' limits, so a client can size its request before sending it.
    assert info.limits["max_objective_terms"] == contract.MAX_TERMS == 16
    assert info.limits["max_direction_values"] == contract.MAX_VECTOR
    assert info.limits["max_group_pictures"] == MAX_GROUP


def slow_standin() -> StandIn:
    # 40 filters of 20 steps, 4 rows at a time: ~2 s of stand-in work per 4 filters.
    return StandIn(engine=Engine(step_seconds=0.02, max_batch=4))


def assert_work_stopped(server: StandIn) -> None:
    """No stream open, and the engine finishes nothing more (within its batches in flight)."""
    stopped_at = len(server.engine.finished)
    time.sleep(0.5)  # the engine would finish ~4 more filters here if it were still running
    assert len(server.engine.finished) == stopped_at
    assert stopped_at <= 1 + 2 * server.engine.max_batch


def test_breaking_out_of_a_stream_stops_the_servers_work() -> None:
    with slow_standin() as server, Client(server.address) as client:
        # Held, so neither the call nor the channel is collected: only the break cancels.
        stream = client.visualize(filters="0:40", steps=20, keep_dead_filters=True)
        for event in stream:
            if isinstance(event, FilterImage):
                break
        server.wait_idle()
        assert_work_stopped(server)
        assert stream is not None


def test_breaking_out_of_an_async_stream_stops_the_servers_work() -> None:
    async def consume(server: StandIn) -> None:
        async with AsyncClient(server.address) as client:
            stream = client.visualize(filters="0:40", steps=20, keep_dead_filters=True)
            async for event in stream:
                if isinstance(event, FilterImage):
                    break
            deadline = time.monotonic() + 30  # the channel stays open while the server winds down
            while server.streams_open() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert not server.streams_open()

    with slow_standin() as server:
        asyncio.run(consume(server))
        assert_work_stopped(server)


def test_async_cancel_ends_the_iteration_quietly() -> None:
    async def consume(address: str) -> list:
        seen = []
        async with AsyncClient(address) as client:
            stream = client.visualize(filters="0:40", steps=20)
            async for event in stream:
                seen.append(event)
                stream.cancel()
        return seen

    with slow_standin() as server:
        seen = asyncio.run(consume(server.address))
        server.wait_idle()
    assert isinstance(seen[0], Accepted) and len(seen) <= 2


def test_sync_cancel_ends_the_iteration_quietly() -> None:
    with slow_standin() as server, Client(server.address) as client:
        stream = client.visualize(filters="0:40", steps=20)
        seen = []
        for event in stream:
            seen.append(event)
            stream.cancel()
        server.wait_idle()
    assert isinstance(seen[0], Accepted) and len(seen) <= 2


def reflection_services(address: str, service: str) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(call(iter([request]), timeout=30))
    return [s.name for s in response.list_services_response.service]


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_is_served_as_v1_and_v1alpha(standin, version) -> None:
    services = reflection_services(standin.address, f"grpc.reflection.{version}.ServerReflection")
    assert "filtercast.v1.FilterVisualizerService" in services
    assert "grpc.reflection.v1.ServerReflection" in services


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_literal_addresses() -> None:
    with StandIn("::1") as server, Client(server.address) as client:
        assert server.address.startswith("[::1]:")
        assert [m.name for m in client.list_models()] == ["vgg16"]


def test_several_hostnames_are_balanced_round_robin() -> None:
    with StandIn() as first, StandIn() as second:
        addresses = [f"localhost:{first.port}", f"localhost:{second.port}"]
        with Client(addresses) as client:
            for _ in range(6):
                list(client.visualize(filters=[0], size=32, steps=1, grid=False))
        assert first.engine.finished and second.engine.finished


def test_a_dns_target_is_used_as_is(standin) -> None:
    with Client(f"dns:///localhost:{standin.port}") as client:
        assert client.describe("vgg16").default_layer == "block5_conv1"


def test_a_malformed_address_is_a_clear_error() -> None:
    for address in ("localhost", "::1:50051", "host:99999"):
        with pytest.raises(ValueError, match="address"):
            Client(address)
    with pytest.raises(ValueError, match="IPv4 and IPv6 addresses cannot be balanced"):
        Client(["[::1]:50051", "127.0.0.1:50052"])


def test_a_write_that_fails_as_its_stream_is_cancelled_leaves_nothing_unretrieved() -> None:
    """The client leaves while a write is in flight, and the write ends in an error rather
    than cancelled (asyncio.wait_for does so when the write it waits on failed at that
    instant): asyncio must not log "Task exception was never retrieved" (it did, at
    ERROR, for a few aborted streams in a hundred)."""
    import gc

    reported: list[dict] = []

    class Leaving:
        async def write(self, message: object) -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise ConnectionResetError("Cannot write to closing transport") from None

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context))
        stream = SimpleNamespace(tools=SimpleNamespace(stall_seconds=30), context=Leaving())
        sender = asyncio.ensure_future(Stream.send(stream, pb.VisualizeFiltersResponse()))
        await asyncio.sleep(0.05)
        sender.cancel()  # handler cancellation: the connection is gone
        with pytest.raises(asyncio.CancelledError):
            await sender
        await asyncio.sleep(0.05)
        gc.collect()

    asyncio.run(scenario())
    assert not [c for c in reported if "never retrieved" in c.get("message", "")]


def established_to(port: int) -> int:
    """TCP connections of this machine established to 127.0.0.1:`port` (also v4-mapped)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            remote, state = line.split()[2:4]
            count += state == "01" and remote.endswith(f"0100007F:{port:04X}")
    return count


def test_each_client_has_its_own_connection(standin) -> None:
    """grpcio shares one connection between channels of a process by default, and the
    server's per-connection stream limit then refused streams of many clients (the
    abuse run: 64 clients in one process, 3 streams ended UNAVAILABLE, REFUSED_STREAM)."""
    before = established_to(standin.port)
    clients = [Client(standin.address) for _ in range(5)]
    try:
        for client in clients:
            client.list_models()
        assert established_to(standin.port) - before == 5
    finally:
        for client in clients:
            client.close()
