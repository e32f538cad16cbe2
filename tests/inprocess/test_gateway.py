"""The HTTP/JSON gateway over the real servicer on the stand-in engine: the proto's JSON
mapping, the same stream as gRPC, errors as grpc-gateway writes them, auth, cached
images, and a client that leaves cancelling its work. No TensorFlow."""

import base64
import http.client
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from google.protobuf import json_format

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client import Client, FilterImage
from filtercast_server.cache.backends import DiskBackend
from filtercast_server.png import png_pixels
from filtercast_server.serving.auth import Identity, TokenAuthenticator
from tests.support.cache import counter
from tests.support.processes import wait_until
from tests.support.standin import Engine, StandIn

REQUEST = {
    "model": "vgg16",
    "filters": {"range": {"start": 0, "stop": 6}},
    "seed": "9",
    "overrides": {"size": 32, "steps": 2},
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    backend = DiskBackend(tmp_path_factory.mktemp("cache"), 10 * 1024**2, None)
    with StandIn(gateway=True, cache_backend=backend, queue_limit=64) as server:
        yield server


def call(server: StandIn, path: str, body: object = None, headers: dict | None = None):
    """(status, headers, body bytes) of one request; errors are answers too."""
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    if data is not None:
        headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(server.http_url + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def lines(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.decode().splitlines() if line]


def test_models_and_layers_follow_the_proto_json_mapping(gateway) -> None:
    status, headers, body = call(gateway, "/v1/models")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    listing = json_format.Parse(body, pb.ListModelsResponse())  # the mapping, exactly
    assert [m.name for m in listing.models] == ["vgg16"]
    assert {p.name for p in listing.presets} >= {"classic", "upscale", "keras_io", "robust"}
    assert "defaultLayer" in json.loads(body)["models"][0]  # lowerCamelCase names
    status, _, body = call(gateway, "/v1/models/vgg16")
    assert status == 200
    assert json.loads(body)["model"]["layers"][0]["name"] == "block5_conv1"


def test_the_ndjson_stream_carries_the_same_events_as_grpc() -> None:
    with StandIn(gateway=True) as server:  # no cache: both streams compute
        status, headers, body = call(server, "/v1/visualize", {**REQUEST, "seed": "21"})
        with Client(server.address) as client:
            grpc_events = list(client.visualize(filters="0:6", size=32, steps=2, seed=21))
    assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
    events = [
        json_format.ParseDict(line["result"], pb.VisualizeFiltersResponse()) for line in lines(body)
    ]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["accepted"] + ["filter"] * 6 + ["grid", "summary"]
    accepted = events[0].accepted
    assert accepted.params.seed == 21 and accepted.params.size == 32
    assert list(accepted.filters) == grpc_events[0].filters
    by_index = {e.index: e for e in grpc_events if isinstance(e, FilterImage)}
    for event in events[1:7]:
        twin = by_index[event.filter.index]
        assert event.filter.dead == twin.dead and event.filter.loss == pytest.approx(twin.loss)
        assert not event.filter.cached and not event.filter.image_key
        if not twin.dead:
            assert (png_pixels(event.filter.image.data) == twin.image).all()
    assert events[-1].summary.kept == grpc_events[-1].kept


def test_server_sent_events_name_each_event(gateway) -> None:
    status, headers, body = call(gateway, "/v1/visualize", REQUEST, {"Accept": "text/event-stream"})
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    frames = [f for f in body.decode().split("\n\n") if f]
    names = [f.split("\n")[0] for f in frames]
    assert names == ["event: accepted"] + ["event: filter"] * 6 + ["event: grid", "event: summary"]
    summary = json.loads(frames[-1].split("\n")[1].removeprefix("data: "))["summary"]
    assert summary["kept"] + summary.get("dead", 0) == 6


@pytest.mark.parametrize(
    ("body", "status", "words", "field"),
    [
        (b"{not json", 400, "not a filtercast.v1.VisualizeFiltersRequest", None),
        ({"modle": "vgg16"}, 400, "no field named", None),
        ({**REQUEST, "overrides": {"size": 4}}, 400, "size=4 is out of range", "overrides.size"),
        ({"model": "vgg99"}, 404, "not served here", "model"),
        (b"[" * 30_000 + b"]" * 30_000, 400, "not a filtercast.v1", None),
        (b"\xff\xfe{}", 400, "not a filtercast.v1", None),
        ({**REQUEST, "seed": "-1"}, 400, "not a filtercast.v1", None),
        ({**REQUEST, "filters": {"range": {"start": 0, "stop": 500}}}, 400, "filters", "filters"),
    ],
)
def test_bad_requests_get_the_grpc_gateway_error_body(gateway, body, status, words, field) -> None:
    got, _, answer = call(gateway, "/v1/visualize", body)
    error = json.loads(answer)
    assert got == status and words in error["message"]
    assert error["code"] == {400: 3, 404: 5}[status]
    if field:
        violations = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
        assert violations[0]["fieldViolations"][0]["field"] == field


def test_aiohttp_refusals_are_json_too(gateway) -> None:
    status, _, body = call(gateway, "/v2/nothing")
    assert status == 404 and json.loads(body)["code"] == 5
    status, _, body = call(gateway, "/v1/visualize")  # GET
    assert status == 405 and json.loads(body)["code"] == 12
    status, _, body = call(gateway, "/v1/visualize", b"x" * (100 * 1024))
    assert status == 413


def test_only_json_bodies_are_taken_so_other_web_pages_cannot_post(gateway) -> None:
    plain = {"Content-Type": "text/plain"}  # what a cross-site form or fetch may send
    status, _, body = call(gateway, "/v1/visualize", json.dumps(REQUEST).encode(), plain)
    assert status == 415 and "application/json" in json.loads(body)["message"]


def test_a_loopback_gateway_refuses_other_host_names(gateway) -> None:
    evil = {"Host": f"attacker.example:{gateway.http_port}"}  # a DNS-rebound page
    status, _, body = call(gateway, "/v1/models", headers=evil)
    assert status == 421 and "loopback" in json.loads(body)["message"]
    assert call(gateway, "/v1/models", headers={"Host": f"localhost:{gateway.http_port}"})[0] == 200


def test_a_request_over_the_queue_limit_is_429_with_retry_after() -> None:
    small = StandIn(gateway=True, queue_limit=4)
    with small:
        status, headers, body = call(small, "/v1/visualize", REQUEST)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert json.loads(body)["code"] == 8


def test_cached_pictures_are_served_by_their_key(gateway) -> None:
    _, _, body = call(gateway, "/v1/visualize", {**REQUEST, "seed": "33"})
    assert gateway.cache is not None and gateway.cache.flush()
    results = [line["result"]["filter"] for line in lines(body) if "filter" in line["result"]]
    live = next(r for r in results if not r.get("dead"))
    status, headers, png = call(gateway, f"/v1/images/{live['imageKey']}.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert png == base64.b64decode(live["image"]["data"])
    # The entry never expires (no TTL): browsers keep the picture a day, not a year.
    assert headers["Cache-Control"] == "public, max-age=86400"
    assert call(gateway, "/v1/images/" + "0" * 32 + ".png")[0] == 404
    assert call(gateway, "/v1/images/..%2Fetc%2Fpasswd.png")[0] in (400, 404)
    assert call(gateway, "/v1/images/XYZ.png")[0] == 400


def test_without_a_cache_images_are_not_found_and_keys_are_empty() -> None:
    with StandIn(gateway=True) as server:
        _, _, body = call(server, "/v1/visualize", REQUEST)
        status, _, answer = call(server, "/v1/images/" + "0" * 32 + ".png")
    results = [line["result"]["filter"] for line in lines(body) if "filter" in line["result"]]
    assert all("imageKey" not in r for r in results)
    assert status == 404 and "no result cache" in json.loads(answer)["message"]


def test_tokens_guard_the_gateway_as_they_guard_grpc() -> None:
    tokens = TokenAuthenticator(
        {"a" * 32: Identity("alice"), "b" * 32: Identity("dashboard", "read")}
    )
    with StandIn(gateway=True, authenticator=tokens) as server:
        status, headers, _ = call(server, "/v1/models")
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert call(server, "/v1/models", headers={"Authorization": "Bearer " + "c" * 32})[0] == 401
        assert call(server, "/v1/models", headers={"Authorization": "Bearer " + "b" * 32})[0] == 200
        read_only = call(server, "/v1/visualize", REQUEST, {"Authorization": "Bearer " + "b" * 32})
        assert read_only[0] == 403
        status, _, _ = call(
            server, "/v1/visualize", REQUEST, {"Authorization": "Bearer " + "a" * 32}
        )
        assert status == 200
        assert call(server, "/")[0] == 200  # the page itself holds no data


def test_a_client_that_leaves_cancels_its_work() -> None:
    engine = Engine(step_seconds=0.02)
    with StandIn(gateway=True, engine=engine) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        body = {
            **REQUEST,
            "filters": {"range": {"start": 0, "stop": 64}},
            "overrides": {"size": 32, "steps": 50},
        }
        connection.request(
            "POST", "/v1/visualize", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        assert "accepted" in json.loads(response.readline())["result"]
        connection.close()
        wait_until(lambda: server.streams_open() == 0, "the stream is wound down")
        done = len(engine.finished)
        wait_until(lambda: server.scheduler.queued == 0, "the queue is empty")
    assert done < 64, "the work went on after the client left"
    assert len(engine.finished) <= done + 4, "more than the batch in hand finished after"


def test_the_gallery_is_served_with_a_strict_content_policy(gateway) -> None:
    status, headers, page = call(gateway, "/")
    assert status == 200 and b"<title>filtercast gallery</title>" in page
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name in ("gallery.js", "gallery.css"):
        assert call(gateway, f"/gallery/{name}")[0] == 200
    assert call(gateway, "/gallery/secret.txt")[0] == 404
    assert call(gateway, "/gallery/%2e%2e%2fapi.py")[0] == 404
    assert counter(gateway.metrics, "filtercast_http_requests_total", route="/", code="200") >= 1


def test_the_page_loads_nothing_from_elsewhere() -> None:
    folder = (
        Path(__file__).resolve().parents[2] / "server/filtercast_server/serving/gateway/gallery"
    )
    for path in folder.iterdir():
        text = path.read_text()
        for outside in ("://", 'src="//', 'href="//', "url(//", "@import"):
            assert outside not in text, f"{path.name} reaches out ({outside})"


def test_a_client_that_never_reads_is_cut_off_after_the_stall_limit() -> None:
    with StandIn(gateway=True, stall_seconds=1) as server:
        body = {
            **REQUEST,
            "filters": {"range": {"start": 0, "stop": 64}},
            "imageFormat": "IMAGE_FORMAT_RAW",  # ~260 KB a frame: the socket fills
            "overrides": {"size": 256, "steps": 1},
        }
        with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            data = json.dumps(body).encode()
            sock.sendall(
                b"POST /v1/visualize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            wait_until(
                lambda: (
                    counter(
                        server.metrics,
                        "filtercast_http_requests_total",
                        route="/v1/visualize",
                        code="499",  # it ended as a client that left
                    )
                    == 1
                ),
                "the stalled stream's handler ended",
            )
            assert server.streams_open() == 0


def test_a_waiting_stream_sends_keepalives(monkeypatch) -> None:
    import filtercast_server.serving.gateway.stream as gateway_module

    monkeypatch.setattr(gateway_module, "HEARTBEAT_SECONDS", 0.05)
    with StandIn(gateway=True, engine=Engine(step_seconds=0.05)) as server:
        slow = {**REQUEST, "filters": {"range": {"start": 0, "stop": 1}}}
        slow["overrides"] = {"size": 32, "steps": 20}  # a second before its filter
        _, _, body = call(server, "/v1/visualize", slow)
    text = body.decode()
    first_filter = text.index('"filter"')
    assert "\n\n" in text[:first_filter], "no keepalive while the filter computed"
    assert all(json.loads(line) for line in text.splitlines() if line)
