"""Production safety against a real server: limits per server and per client, bearer
tokens, health never refused, never-read streams, hostile connections, no thread per
metrics connection. Each test here failed on the server before these protections."""

import contextlib
import os
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from filtercast_client.client import Accepted, Client, FilterImage, retry_after
from filtercast_client.health import check
from tests.support.processes import ServerProcess

TOKENS = {
    "alice": "alice-token-0123456789",
    "bob": "bob-token-0123456789ab",
    "reader": "reader-token-012345678",
}
LONG = {"size": 32, "steps": 60}  # a request that keeps its stream open for a while
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server with tokens and small limits: 6 streams (3 per client), 200 queued filters
    per client, a 2-result stream buffer, 3 s stall limit, 40 connections."""
    directory = tmp_path_factory.mktemp("guarded")
    tokens = directory / "tokens"
    tokens.write_text(
        "# name token role\n"
        f"alice {TOKENS['alice']}\n"
        f"bob {TOKENS['bob']}  # a comment\n"
        f"reader {TOKENS['reader']} read\n"
    )
    process = ServerProcess(
        *("--auth-tokens-file", str(tokens)),
        *("--max-concurrent-streams", "6", "--client-max-streams", "3"),
        *("--queue-limit", "400", "--client-queue-limit", "200"),
        *("--stream-buffer", "2", "--stall-seconds", "3"),
        *("--max-connections", "40", "--handshake-timeout-seconds", "2"),
        *("--max-batch", "4", "--precision", "float32"),
        log_dir=directory,
    ).wait_serving()
    yield process
    assert process.stop() == 0


def client_of(server: ServerProcess, name: str) -> Client:
    return Client(server.address, token=TOKENS[name], attempts=1)


@contextlib.contextmanager
def open_streams(server: ServerProcess, name: str, count: int, filters: str = "0:50"):
    """`count` streams of `name` that stay open (Accepted read, nothing more); cancelled after."""
    client = client_of(server, name)
    streams = [client.visualize(filters=filters, overrides=LONG) for _ in range(count)]
    # Held until the end: dropping an iterator cancels its stream.
    iterators = [iter(stream) for stream in streams]
    try:
        for iterator in iterators:
            assert isinstance(next(iterator), Accepted)
        yield client
    finally:
        for stream in streams:
            stream.cancel()
        client.close()


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_tokens_are_required_except_for_health(guarded) -> None:
    before = guarded.metric("filtercast_rejected_total", reason="unauthenticated")
    with Client(guarded.address, attempts=1) as anonymous:
        error = refusal(anonymous.list_models)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer" in error.details()
        assert check(anonymous.channel) == SERVING  # probes carry no token
    with Client(guarded.address, token="wrong-token-000000000000", attempts=1) as wrong:
        error = refusal(lambda: list(wrong.visualize(filters=[0])))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == "the bearer token was not accepted"
    with client_of(guarded, "reader") as reader:
        assert reader.list_models()[0].name == "vgg16"
        error = refusal(lambda: list(reader.visualize(filters=[0])))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    with client_of(guarded, "alice") as alice:
        assert alice.describe().weights_source == "random"
    assert guarded.metric("filtercast_rejected_total", reason="unauthenticated") == before + 2
    assert guarded.metric("filtercast_rejected_total", reason="permission_denied") >= 1


def test_health_and_listing_answer_while_every_stream_slot_is_held(guarded) -> None:
    refused = guarded.metric("filtercast_rejected_total", reason="streams")
    with open_streams(guarded, "alice", 3), open_streams(guarded, "bob", 3):
        # Six streams: the server's limit. Control calls still answer, from new connections too.
        with Client(guarded.address, attempts=1) as fresh:
            assert check(fresh.channel) == SERVING
        with client_of(guarded, "reader") as reader:
            assert reader.list_models() and reader.describe().layers
            error = refusal(lambda: next(iter(reader.visualize(filters=[0]))))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        with Client(guarded.address, token=TOKENS["bob"], attempts=1) as bob:
            error = refusal(lambda: next(iter(bob.visualize(filters=[0]))))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "streams open, its limit" in error.details() and retry_after(error) >= 1
    assert guarded.metric("filtercast_rejected_total", reason="streams") == refused + 1
    assert guarded.handled("VisualizeFilters", "RESOURCE_EXHAUSTED") >= 1


def test_a_client_cannot_take_more_than_its_share(guarded) -> None:
    with open_streams(guarded, "alice", 3, filters="0:10") as alice:
        error = refusal(lambda: next(iter(alice.visualize(filters=[0]))))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "streams open, the limit per client" in error.details()
        with client_of(guarded, "bob") as bob:  # another client is still served
            assert isinstance(next(iter(bob.visualize(filters=[0], overrides=LONG))), Accepted)
    # Queued filters: alice may have 200 waiting; bob's request still goes in.
    with open_streams(guarded, "alice", 1, filters="0:200") as alice:
        error = refusal(lambda: next(iter(alice.visualize(filters="200:210"))))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit 200 per client" in error.details() and retry_after(error) >= 1
        with client_of(guarded, "bob") as bob:
            stream = bob.visualize(filters="200:210", overrides=LONG)
            assert isinstance(next(iter(stream)), Accepted)
            stream.cancel()
    assert guarded.metric("filtercast_rejected_total", reason="client_queue") >= 1


def test_a_stream_that_is_never_read_pauses_its_work_and_is_ended(guarded) -> None:
    def computed() -> float:
        return sum(guarded.metric("filtercast_filters_total", outcome=o) for o in ("ok", "dead"))

    stalled = guarded.metric("filtercast_rejected_total", reason="stalled")
    before = computed()
    with client_of(guarded, "alice") as alice:
        # 64 pictures of 512 px, raw: 786 KB each, far more than the transport buffers.
        stream = alice.visualize(
            layer="block1_conv1",
            filters="0:64",
            overrides={"size": 512, "steps": 1},
            image_format="raw",
            grid=False,
            keep_dead_filters=True,
        )
        events = iter(stream)
        assert isinstance(next(events), Accepted)
        deadline = time.monotonic() + 120
        while guarded.metric("filtercast_rejected_total", reason="stalled") == stalled:
            assert time.monotonic() < deadline, "the stalled stream was never ended"
            time.sleep(0.5)
        # What the server computed for it: the stream buffer (2), one batch (4) and what the
        # transport's windows and socket buffers held (~12 MB here) — far from all 64.
        assert computed() - before < 40, computed() - before
        received = 0
        with pytest.raises(grpc.RpcError) as info:
            for event in events:
                received += isinstance(event, FilterImage)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "read nothing for 3 s" in info.value.details()
        assert received < 40
    assert guarded.metric("filtercast_queued_filters") == 0


def server_fds(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Read (the server's HTTP/2 preface, if any) until the server closes the socket."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def test_silent_connections_are_capped_and_closed(guarded) -> None:
    before = server_fds(guarded)
    sockets = [socket.create_connection(("127.0.0.1", guarded.port)) for _ in range(60)]
    try:
        time.sleep(0.5)
        # 40 connections at most: the rest are closed as they arrive.
        assert server_fds(guarded) - before <= 40
        for sock in sockets:  # the server closes every silent one (2 s handshake timeout)
            assert closed_by_peer(sock, within=30)
        with Client(guarded.address, attempts=1) as fresh:
            assert check(fresh.channel) == SERVING
    finally:
        for sock in sockets:
            sock.close()


def test_the_open_file_limit_is_raised_to_its_hard_cap(guarded) -> None:
    limits = Path(f"/proc/{guarded.process.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard, line


def server_threads(server: ServerProcess) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


def test_slow_metrics_connections_cost_no_threads(guarded) -> None:
    before = server_threads(guarded)
    sockets = []
    try:
        for _ in range(200):  # half a request each, then silence (slowloris)
            sock = socket.create_connection(("127.0.0.1", guarded.metrics_port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            sockets.append(sock)
        time.sleep(1)
        assert server_threads(guarded) - before <= 4
        url = f"http://127.0.0.1:{guarded.metrics_port}/metrics"
        assert b"filtercast_queued_filters" in urllib.request.urlopen(url, timeout=10).read()
    finally:
        for sock in sockets:
            sock.close()


def test_malformed_requests_are_invalid_argument_and_logged_once(guarded) -> None:
    method = "/filtercast.v1.FilterVisualizerService/DescribeModel"
    metadata = (("authorization", f"Bearer {TOKENS['alice']}"),)
    with grpc.insecure_channel(guarded.address) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        for _ in range(30):
            error = refusal(
                lambda: call(b"\xff\xff\xff\xff garbage", timeout=10, metadata=metadata)
            )
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "could not decode the request as filtercast.v1.DescribeModelRequest" in (
                error.details()
            )
    log = guarded.log_path.read_text()
    assert log.count("undecodable DescribeModelRequest") == 1 and "Traceback" not in log
    assert guarded.metric("filtercast_rejected_total", reason="malformed") >= 30


def test_reflection_needs_a_token_too(guarded) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(guarded.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        error = refusal(lambda: list(stub.ServerReflectionInfo(iter([request]), timeout=10)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", f"Bearer {TOKENS['reader']}"),)
        (answer,) = stub.ServerReflectionInfo(iter([request]), timeout=10, metadata=metadata)
        names = {s.name for s in answer.list_services_response.service}
        assert "filtercast.v1.FilterVisualizerService" in names
