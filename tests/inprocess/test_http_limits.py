"""The HTTP gateway's own limits: headers and bodies that never finish are cut off,
connections past the cap are refused at once, `Expect: 100-continue` is checked
against the body limit (the stand-in server; e2e/test_http_flood.py floods a real one)."""

import json
import select
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from filtercast_server.serving.gateway.routes import MAX_BODY_BYTES, HttpPolicy
from tests.support.cache import counter
from tests.support.processes import wait_until
from tests.support.standin import StandIn

HALF_SENT = (
    b"POST /v1/visualize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
)


@pytest.fixture(scope="module")
def gateway() -> Iterator[StandIn]:
    limits = HttpPolicy(max_connections=24, read_seconds=1.0, loopback=True)
    with StandIn(gateway=True, http_policy=limits) as server:
        yield server


def connect(server: StandIn) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=30)


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_that_never_ends_is_cut_off_with_408(gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(HALF_SENT)
        started = time.monotonic()
        reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["code"] == 4  # DEADLINE_EXCEEDED
    assert time.monotonic() - started < 20
    wait_until(lambda: gateway.streams_open() == 0, "the slow body holds nothing")
    assert counter(gateway.metrics, "filtercast_rejected_total", reason="http_slow_body") >= 1


def test_headers_sent_a_byte_at_a_time_are_cut_off(gateway) -> None:
    """Each byte arrives in time, the whole never does: the read limit counts from the start."""
    with connect(gateway) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        closed_after = None
        while time.monotonic() - started < 10:
            if select.select([sock], [], [], 0.2)[0]:  # readable: the server closed it
                closed_after = time.monotonic() - started
                break
            try:
                sock.sendall(b"a")
            except OSError:
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None, "slow headers were waited for past the read limit"
    assert closed_after < 5


def test_connections_past_the_cap_get_503_and_the_rest_are_served(gateway) -> None:
    held = [connect(gateway) for _ in range(24)]
    try:
        wait_until(
            lambda: counter(gateway.metrics, "filtercast_http_connections") == 24,
            "the gateway counts 24 connections",
        )
        with connect(gateway) as extra:
            reply = answer(extra)
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
        assert b"Retry-After: 1" in reply
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["code"] == 14  # UNAVAILABLE
        assert counter(gateway.metrics, "filtercast_rejected_total", reason="http_connections")
    finally:
        for sock in held:
            sock.close()
    wait_until(
        lambda: counter(gateway.metrics, "filtercast_http_connections") == 0,
        "closed connections give their slots back",
    )
    with urllib.request.urlopen(gateway.http_url + "/v1/models", timeout=30) as response:
        assert response.status == 200


@pytest.mark.parametrize(
    ("length", "status"), [(100 * 1024**2, b"413"), (MAX_BODY_BYTES + 1, b"413")]
)
def test_expect_100_continue_is_checked_against_the_body_limit(gateway, length, status) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /v1/visualize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % length
        )
        reply = sock.recv(65536)
    assert not reply.startswith(b"HTTP/1.1 100"), "100 Continue for a body over the limit"
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:200]


def test_expect_100_continue_for_a_body_within_the_limit(gateway) -> None:
    body = json.dumps({"model": "vgg16", "filters": {"list": {"indices": [1]}}}).encode()
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /v1/visualize HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert b'"summary"' in reply


def test_a_declared_oversized_body_is_refused_before_it_is_read(gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /v1/visualize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{"
        )
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
