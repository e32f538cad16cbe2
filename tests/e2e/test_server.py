"""The gRPC service end to end: a real server on 127.0.0.1 and the real client."""

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.client import (
    Accepted,
    Client,
    FilterImage,
    GridImage,
    Summary,
    retry_after,
)
from filtercast_client.health import check
from tests.support.processes import ServerProcess, wait_until

SMALL = {"size": 32, "steps": 2}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(
        "--max-batch",
        "8",
        "--queue-limit",
        "150",
        "--precision",
        "float32",
        log_dir=tmp_path_factory.mktemp("logs"),
    ).wait_serving()
    yield process
    assert process.stop() == 0


@pytest.fixture()
def client(server):
    with Client(server.address) as c:
        yield c


def test_events_arrive_in_order_with_their_content(client) -> None:
    events = list(client.visualize(filters="0:5", overrides=SMALL, seed=11, grid_n=2))
    accepted, results, grid, summary = events[0], events[1:-2], events[-2], events[-1]
    assert isinstance(accepted, Accepted) and accepted.seed == 11
    assert accepted.filters == [0, 1, 2, 3, 4] and accepted.params["layer"] == "block5_conv1"
    assert accepted.params["size"] == 32 and accepted.params["precision"] == "float32"
    assert all(isinstance(r, FilterImage) for r in results)
    assert sorted(r.index for r in results) == [0, 1, 2, 3, 4]
    assert [r.done for r in results] == [1, 2, 3, 4, 5] and {r.total for r in results} == {5}
    for r in results:
        assert r.dead or (r.image.shape == (32, 32, 3) and r.image.dtype == np.uint8)
    assert isinstance(grid, GridImage) and grid.image.shape == (
        32 * grid.n + 5 * (grid.n - 1),
    ) * 2 + (3,)
    assert isinstance(summary, Summary) and summary.kept + summary.dead == 5


def test_raw_images_and_no_grid(client) -> None:
    events = list(
        client.visualize(
            filters=[3, 1], overrides=SMALL, image_format="raw", grid=False, keep_dead_filters=True
        )
    )
    assert [type(e) for e in events] == [Accepted, FilterImage, FilterImage, Summary]
    assert all(e.image.shape == (32, 32, 3) and not e.dead for e in events[1:3])


def test_same_seed_same_pictures_across_requests(client) -> None:
    first = {
        e.index: e
        for e in client.visualize(filters="0:3", overrides=SMALL, seed=5, keep_dead_filters=True)
        if isinstance(e, FilterImage)
    }
    again = {
        e.index: e
        for e in client.visualize(
            filters=[2, 0, 1], overrides=SMALL, seed=5, keep_dead_filters=True
        )
        if isinstance(e, FilterImage)
    }
    for index, event in first.items():
        assert np.abs(event.image.astype(int) - again[index].image.astype(int)).max() <= 2


def test_the_robust_preset_streams_every_filter_reproducibly(client) -> None:
    overrides = {"size": 32, "steps": 2, "pad": 4, "jitter": 2, "init_scale": 0.02}
    runs = [
        list(client.visualize(preset="robust", filters="0:3", overrides=overrides, seed=9))
        for _ in range(2)
    ]
    accepted, summary = runs[0][0], runs[0][-1]
    assert accepted.params["parameterization"] == "fourier"
    assert accepted.params["objective"] == "pre_activation"
    assert accepted.params["preprocessing"] == "model" and accepted.params["pad"] == 4
    assert accepted.params["init_scale"] == pytest.approx(0.02)
    assert isinstance(summary, Summary) and (summary.kept, summary.dead) == (3, 0)
    pictures = [
        {e.index: e.image.tobytes() for e in events if isinstance(e, FilterImage)}
        for events in runs
    ]
    assert len(pictures[0]) == 3 and pictures[0] == pictures[1]


def test_revive_is_reported_per_filter_and_in_the_summary(server, client) -> None:
    # Whichever filters die with these random weights, the counts must agree.
    restarts = {"model": "vgg16", "layer": "block5_conv1"}
    before = server.metric("filtercast_filter_restarts_total", **restarts)
    events = list(
        client.visualize(filters="0:6", overrides={**SMALL, "revive": 2}, seed=3, grid=False)
    )
    accepted, results, summary = events[0], events[1:-1], events[-1]
    assert accepted.params["revive"] == 2
    for result in results:
        assert 0 <= result.revived <= 2
        assert result.steps >= result.revived + (0 if result.dead else SMALL["steps"])
    alive_after_restart = sum(1 for r in results if r.revived and not r.dead)
    assert summary.revived == alive_after_restart
    spent = sum(r.revived for r in results)
    assert server.metric("filtercast_filter_restarts_total", **restarts) - before == spent


def test_concurrent_clients_share_batches_and_get_exactly_their_filters(server) -> None:
    before_sum = server.metric("filtercast_batch_size_sum", layer="block5_conv1", model="vgg16")
    before_count = server.metric("filtercast_batch_size_count", layer="block5_conv1", model="vgg16")
    received: dict[int, list[int]] = {}

    def one_client(k: int) -> None:
        with Client(server.address) as c:
            events = c.visualize(
                filters=[k, k + 8, k + 16],
                overrides={"size": 32, "steps": 6},
                keep_dead_filters=True,
                grid=False,
            )
            received[k] = sorted(e.index for e in events if isinstance(e, FilterImage))

    threads = [threading.Thread(target=one_client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert received == {k: [k, k + 8, k + 16] for k in range(8)}
    rows = server.metric("filtercast_batch_size_sum", layer="block5_conv1", model="vgg16")
    steps = server.metric("filtercast_batch_size_count", layer="block5_conv1", model="vgg16")
    assert (rows - before_sum) / (steps - before_count) > 3  # alone, each would run 3 rows


def test_a_small_request_is_not_starved_by_a_big_one(server) -> None:
    finished: dict[str, float] = {}

    def run(name: str, filters: str) -> None:
        with Client(server.address) as c:
            list(
                c.visualize(
                    filters=filters,
                    overrides={"size": 32, "steps": 4},
                    keep_dead_filters=True,
                    grid=False,
                )
            )
        finished[name] = time.monotonic()

    queued = server.metric("filtercast_queued_filters")
    big = threading.Thread(target=run, args=("big", "0:64"))
    big.start()
    wait_until(lambda: server.metric("filtercast_queued_filters") > queued, "big is queued")
    run("small", "100:104")
    big.join(300)
    assert finished["small"] < finished["big"]


def test_cancel_mid_stream_stops_the_remaining_filters(server, client) -> None:
    def computed() -> float:
        return server.metric("filtercast_filters_total", outcome="ok") + server.metric(
            "filtercast_filters_total", outcome="dead"
        )

    before, cancelled_before = (
        computed(),
        server.metric("filtercast_filters_total", outcome="cancelled"),
    )
    codes_before = {
        code: server.handled("VisualizeFilters", code) for code in ("CANCELLED", "UNKNOWN")
    }
    stream = client.visualize(
        filters="0:64", overrides={"size": 32, "steps": 6}, keep_dead_filters=True
    )
    received = 0
    for event in stream:
        if isinstance(event, FilterImage):
            received += 1
            if received == 2:
                stream.cancel()
                break

    def cancelled() -> float:
        return server.metric("filtercast_filters_total", outcome="cancelled") - cancelled_before

    # Every filter ends exactly once (ok, dead or cancelled): all 64 have ended, so
    # nothing more can be computed for this request.
    wait_until(lambda: computed() - before + cancelled() == 64, "every filter has ended")
    settled = computed()
    assert settled - before < 64
    assert cancelled() >= 64 - received - 8 * 2  # at most the batches around the cancel
    # A client's cancel is CANCELLED in the gRPC metrics, never UNKNOWN.
    assert server.handled("VisualizeFilters", "CANCELLED") == codes_before["CANCELLED"] + 1
    assert server.handled("VisualizeFilters", "UNKNOWN") == codes_before["UNKNOWN"]


def test_deadline_exceeded(server, client) -> None:
    counted = server.handled("VisualizeFilters", "DEADLINE_EXCEEDED")
    with pytest.raises(grpc.RpcError) as info:
        list(client.visualize(filters="0:64", overrides={"size": 32, "steps": 20}, timeout=1.0))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(
        lambda: server.handled("VisualizeFilters", "DEADLINE_EXCEEDED") > counted,
        "the server counted the expired call",
    )
    wait_until(lambda: server.metric("filtercast_queued_filters") == 0, "the queue is empty")
    codes = {c: server.handled("VisualizeFilters", c) for c in ("DEADLINE_EXCEEDED", "CANCELLED")}
    assert codes["DEADLINE_EXCEEDED"] == counted + 1, (counted, codes)


def test_queue_full_is_rejected_at_once_with_a_retry_hint(client) -> None:
    big = client.visualize(filters="0:120", overrides={"size": 32, "steps": 20})
    events = iter(big)
    assert isinstance(next(events), Accepted)  # its 120 filters are queued now
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            list(client.visualize(filters="200:250", overrides=SMALL))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit 150" in info.value.details() and time.monotonic() - started < 10
        assert retry_after(info.value) >= 1 and "retry in ~" in info.value.details()
    finally:
        big.cancel()


@pytest.mark.parametrize(
    ("request_kwargs", "code", "message"),
    [
        ({"model": "alexnet"}, grpc.StatusCode.NOT_FOUND, "served models: vgg16"),
        ({"layer": "block9_conv1"}, grpc.StatusCode.INVALID_ARGUMENT, "valid layers: block1_conv1"),
        ({"filters": "510:600"}, grpc.StatusCode.INVALID_ARGUMENT, "filters: 0..511"),
        ({"filters": [-1]}, grpc.StatusCode.INVALID_ARGUMENT, "filter -1 is out of range"),
        (
            {"overrides": {"size": 4000}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "size=4000 is out of range; valid: 16..512",
        ),
        ({"overrides": {"steps": 0}}, grpc.StatusCode.INVALID_ARGUMENT, "steps=0 is out of range"),
        (
            {"overrides": {"size": 512}, "filters": "0:100", "grid_n": 10, "image_format": "raw"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "ask for grid.n <= 9",
        ),
        ({"grid_n": 0}, grpc.StatusCode.INVALID_ARGUMENT, "grid_n=0 is out of range"),
        (
            {"preset": "upscale", "overrides": {"size": 40}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "below the minimum 16",
        ),
    ],
)
def test_bad_requests_get_the_right_status(client, request_kwargs, code, message) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(client.visualize(**request_kwargs))
    assert info.value.code() == code
    assert message in info.value.details()


def test_bad_enum_values_and_empty_lists(client) -> None:
    for request in (
        pb.VisualizeFiltersRequest(preset=99),
        pb.VisualizeFiltersRequest(precision=42),
        pb.VisualizeFiltersRequest(filters=pb.FilterSelection(list=pb.FilterList())),
    ):
        with pytest.raises(grpc.RpcError) as info:
            list(client.stub.VisualizeFilters(request))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_models_and_layers_are_described(client) -> None:
    (info,) = client.list_models()
    assert info.name == "vgg16" and info.weights_source == "random"
    layers = {layer.name: layer for layer in info.layers}
    assert layers["block5_conv1"].channels == 512 and layers["block5_conv1"].output_stride == 16
    assert client.describe("vgg16").default_layer == "block5_conv1"
    with pytest.raises(grpc.RpcError) as error:
        client.describe("vgg19")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_largest_allowed_grid_travels(client) -> None:
    # A 9x9 grid of 512 px pictures is the largest the 64 MiB limit admits:
    # 4,648 x 4,648 x 3 = 64.8 MB raw. block1_conv1 keeps it cheap to compute.
    events = list(
        client.visualize(
            layer="block2_conv1",
            filters="0:81",
            image_format="raw",
            overrides={"size": 512, "steps": 1},
            grid_n=9,
            keep_dead_filters=True,
        )
    )
    grid = next(e for e in events if isinstance(e, GridImage))
    assert grid.n == 9 and grid.image.shape == (4648, 4648, 3)


def test_metrics_move_after_requests(server, client) -> None:
    list(client.visualize(filters="0:2", overrides=SMALL))
    assert (
        server.metric(
            "filtercast_request_duration_seconds_count",
            model="vgg16",
            layer="block5_conv1",
            preset="classic",
            outcome="ok",
        )
        >= 1
    )
    assert (
        server.metric(
            "filtercast_time_to_first_filter_seconds_count",
            model="vgg16",
            layer="block5_conv1",
            preset="classic",
        )
        >= 1
    )
    assert server.handled("VisualizeFilters", "OK") >= 1
    assert server.handled("VisualizeFilters", "INVALID_ARGUMENT") >= 1
    assert (
        server.metric(
            "filtercast_ascent_step_seconds_count",
            model="vgg16",
            layer="block5_conv1",
            precision="float32",
        )
        >= 2
    )
    assert server.metric("filtercast_native_deprocess_seconds_count") >= 1
    assert server.metric("filtercast_native_stitch_seconds_count") >= 1
    assert server.metric("filtercast_filter_queue_wait_seconds_count") >= 2
    assert server.metric("filtercast_requests_in_flight") == 0


def test_health_and_sigterm_drain(tmp_path) -> None:
    process = ServerProcess("--max-batch", "4", "--grace-seconds", "60", log_dir=tmp_path)
    try:
        statuses = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status = process.health()
                statuses.add(status)
                if status == SERVING:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        assert statuses == {NOT_SERVING, SERVING}, "NOT_SERVING while loading, then SERVING"
        assert process.health("filtercast.v1.FilterVisualizerService") == SERVING
        with Client(process.address) as c:
            stream = iter(
                c.visualize(
                    filters="0:16", overrides={"size": 32, "steps": 60}, keep_dead_filters=True
                )
            )
            events = [next(stream), next(stream)]
            process.process.send_signal(15)
            wait_until(
                lambda: process.health() == NOT_SERVING, "the draining server says NOT_SERVING"
            )
            # Draining: the port stays open while the stream runs. A new connection hears
            # NOT_SERVING (not "connection refused") and a new stream is UNAVAILABLE.
            with Client(process.address, attempts=1) as fresh:
                assert check(fresh.channel) == NOT_SERVING
                with pytest.raises(grpc.RpcError) as refused:
                    list(fresh.visualize(filters=[0]))
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "shutting down" in refused.value.details()
            events.extend(stream)
        assert sum(isinstance(e, FilterImage) for e in events) == 16
        assert isinstance(events[-1], Summary)
    finally:
        assert process.stop() == 0


def test_reflection_lists_and_describes_the_service(server) -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    database = ProtoReflectionDescriptorDatabase(server.channel)
    services = set(database.get_services())
    assert {"filtercast.v1.FilterVisualizerService", "grpc.health.v1.Health"} <= services
    service = DescriptorPool(database).FindServiceByName("filtercast.v1.FilterVisualizerService")
    assert [m.name for m in service.methods] == [
        "ListModels",
        "DescribeModel",
        "VisualizeFilters",
        "AnalyzeImage",
        "DatasetExamples",
    ]


def test_a_stream_delivers_its_first_result_well_before_its_last(tmp_path) -> None:
    # Server defaults (8 rows per batch on a CPU): 32 filters run in waves.
    process = ServerProcess("--precision", "float32", log_dir=tmp_path).wait_serving()
    try:
        with Client(process.address) as client:
            started, arrivals = time.monotonic(), []
            for event in client.visualize(
                filters="0:32",
                overrides={"size": 48, "steps": 8},
                keep_dead_filters=True,
                grid=False,
            ):
                if isinstance(event, FilterImage):
                    arrivals.append(time.monotonic() - started)
        assert len(arrivals) == 32
        assert arrivals[0] < 0.5 * arrivals[-1], (arrivals[0], arrivals[-1])
    finally:
        assert process.stop() == 0
