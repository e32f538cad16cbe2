"""Forged and corrupt cache entries through the real servicer, gRPC and HTTP (stand-in
engine, a real directory cache): every one is refused, counted, deleted and computed
again; no request fails and no forged byte reaches a client."""

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from filtercast_client import Client, FilterImage, Summary
from filtercast_server.cache.backends import DiskBackend
from filtercast_server.cache.entry import EntryCodec
from filtercast_server.jobs import FilterOutcome
from filtercast_server.png import png_bytes
from tests.support.cache import FLAT, OUTSIDER, counter, fields_of, old_layout, signed
from tests.support.standin import StandIn

REQUEST = {"filters": "0:8", "size": 32, "steps": 2, "seed": 11}
HTML = b"<html><script>alert(document.cookie)</script></html>"


def forgeries(key: str, genuine: bytes, index: int) -> dict[str, bytes]:
    """Each way to put bad bytes under `key`: by an outsider, or with the secret itself."""
    header, body = fields_of(genuine)
    flat = png_bytes(FLAT)
    garbled = body[:40] + bytes(40) + body[80:]
    return {
        "outsider, new layout": OUTSIDER.pack(key, FilterOutcome(index, 99.0, False, FLAT, 2, 0.1)),
        "outsider, old layout": old_layout(flat, index),
        "steps 2**40": signed({**header, "steps": 2**40}, body, key),
        "garbled PNG": signed({**header, "length": len(garbled)}, garbled, key),
        "HTML body": signed({**header, "length": len(HTML)}, HTML, key),
        "a cut picture": signed({**header, "length": len(flat) - 1}, flat[:-1], key),
        "dead with a picture": signed({**header, "dead": True}, body, key),
    }


SHAPES = list(
    forgeries(
        "0" * 32,
        EntryCodec(b"x" * 32).pack("0" * 32, FilterOutcome(0, 1.0, False, FLAT, 2, 0.1)),
        0,
    )
)


def grpc_stream(server: StandIn) -> list:
    with Client(server.address) as client:
        return list(client.visualize(**REQUEST))  # with a grid: cached pixels are decoded


def http_stream(server: StandIn) -> list[dict]:
    body = {
        "model": "vgg16",
        "filters": {"range": {"start": 0, "stop": 8}},
        "seed": "11",
        "overrides": {"size": 32, "steps": 2},
    }
    request = urllib.request.Request(
        server.http_url + "/v1/visualize",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        return [json.loads(line) for line in response.read().decode().splitlines() if line]


def images(events: list) -> dict[int, np.ndarray | None]:
    return {e.index: e.image for e in events if isinstance(e, FilterImage)}


def forge(backend: DiskBackend, live: list[FilterImage], shape: str) -> None:
    for event in live:
        genuine = backend.get_many([event.image_key])[event.image_key]
        backend.put(event.image_key, forgeries(event.image_key, genuine, event.index)[shape])


@pytest.mark.parametrize("shape", SHAPES)
def test_a_forged_entry_is_never_served_and_never_fails_a_request(tmp_path: Path, shape) -> None:
    backend = DiskBackend(tmp_path, 10 * 1024**2, None)
    with StandIn(gateway=True, cache_backend=backend) as server:
        first = grpc_stream(server)
        assert server.cache is not None and server.cache.flush()
        live = [e for e in first if isinstance(e, FilterImage) and e.image is not None]
        forge(backend, live, shape)
        for event in live:  # the picture route serves none of it
            url = f"{server.http_url}/v1/images/{event.image_key}.png"
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url, timeout=30)
            assert refused.value.code == 404
        over_http = http_stream(server)
        assert server.cache.flush()
        forge(backend, live, shape)  # the recomputed entries were stored: forge them again
        over_grpc = grpc_stream(server)
        assert server.cache.flush()
        again = grpc_stream(server)
        faults = counter(
            server.metrics,
            "filtercast_cache_errors_total",
            operation="forged" if shape.startswith("outsider, new") else "corrupt",
        )
    assert "error" not in over_http[-1] and "summary" in over_http[-1]["result"]
    http_results = {
        f.get("index", 0): f for line in over_http if (f := line["result"].get("filter"))
    }
    assert len(http_results) == 8
    results = [e for e in over_grpc if isinstance(e, FilterImage)]
    assert isinstance(over_grpc[-1], Summary) and len(results) == 8
    for event in live:
        assert not http_results[event.index].get("cached"), "a forged entry was served (HTTP)"
        assert (
            http_results[event.index]["image"]["data"]
            == base64.b64encode(png_bytes(event.image)).decode()
        )
    assert not any(e.cached for e in results if e.image is not None), "forged entry (gRPC)"
    for index, image in images(first).items():
        if image is not None:
            np.testing.assert_array_equal(images(over_grpc)[index], image)
    assert isinstance(again[-1], Summary) and again[-1].cached == 8, "refusals not replaced"
    if shape == "outsider, old layout":
        assert faults == 0  # another layout is a miss, overwritten by the recomputation
    else:
        assert faults == 2 * len(live)
