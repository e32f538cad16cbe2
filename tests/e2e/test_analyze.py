"""AnalyzeImage through the real server: gRPC and HTTP, real photographs, hostile images."""

import base64
import http.client
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from filtercast.contract import MAX_IMAGE_BYTES
from filtercast_client import Client
from filtercast_client.errors import InvalidRequest, NotFound
from tests.e2e.test_client_cli import cli

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the photographs")


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def post(url: str, data, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_photograph_gives_its_top_channels_and_heatmaps(web_server) -> None:
    photo = skimage_data.chelsea()  # 300 x 451
    with Client(web_server.address) as client:
        found = client.analyze(
            jpeg(photo), layer="block4_conv3", size=128, top_k=3, channels=[5], raw_maps=True
        )
        again = client.analyze(jpeg(photo), layer="block4_conv3", size=128, top_k=3)
    assert (found.model, found.layer, found.preprocessing) == ("vgg16", "block4_conv3", "caffe")
    assert found.source == {"format": "JPEG", "mode": "RGB", "width": 451, "height": 300}
    assert found.seen.shape == (128, 128, 3) and found.map_shape == (16, 16)
    assert found.channel_count == 512 and len(found.top) == 3 and found.named[0].channel == 5
    means = [c.mean for c in found.top]
    assert means == sorted(means, reverse=True) and found.top[0].share > 0
    for channel in found.top:
        assert channel.heatmap.shape == (128, 128, 3)
        assert channel.values is not None and channel.values.shape == (16, 16)
        assert channel.values.mean() == pytest.approx(channel.mean, rel=1e-4)
        assert channel.values[channel.peak] == pytest.approx(channel.max)
    assert [c.channel for c in again.top] == [c.channel for c in found.top]  # deterministic


def test_the_gateway_takes_the_image_as_the_body_or_in_json(web_server) -> None:
    data = jpeg(skimage_data.coffee())
    url = f"{web_server.http_url}/v1/models/vgg16:analyze"
    status, raw = post(f"{url}?layer=block5_conv1&size=64&top_k=2&channels=7", data, "image/jpeg")
    assert status == 200, raw
    assert raw["layer"] == "block5_conv1" and len(raw["top"]) == 2
    assert raw["named"][0]["channel"] == 7
    assert raw["seen"]["width"] == 64 and base64.b64decode(raw["top"][0]["heatmap"]["data"])
    body = {
        "layer": "block5_conv1",
        "size": 64,
        "topK": 2,
        "image": base64.b64encode(data).decode(),
    }
    status, mapped = post(url, json.dumps(body).encode(), "application/json")
    assert status == 200 and [c["channel"] for c in mapped["top"]] == [
        c["channel"] for c in raw["top"]
    ]
    status, error = post(f"{url}?layr=x", data, "image/jpeg")
    assert status == 400 and "unknown query parameter 'layr'" in error["message"]
    status, error = post(url, b"GIF89a....", "image/gif")
    assert status == 415
    status, error = post(f"{web_server.http_url}/v1/models/vgg99:analyze", data, "image/jpeg")
    assert status == 404 and "vgg99" in error["message"]


def bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buffer, format="PNG")  # 64 Mpx of zeros: ~80 KB
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "fields", "field", "words"),
    [
        (b"not an image", {}, "image", "not a PNG or JPEG file"),
        (jpeg(np.zeros((64, 64, 3), np.uint8))[:200], {}, "image", "could not be decoded as JPEG"),
        (bomb(), {}, "image", "declares 8000x8000 pixels; at most 40000000"),
        (jpeg(np.zeros((8, 8, 3), np.uint8)), {"layer": "block9"}, "layer", "'block9' not found"),
        (jpeg(np.zeros((8, 8, 3), np.uint8)), {"top_k": 100}, "top_k", "top_k=100 is out of"),
        (jpeg(np.zeros((8, 8, 3), np.uint8)), {"size": 4}, "size", "size=4 is out of range"),
    ],
)
def test_every_bad_image_or_field_is_refused_naming_it(web_server, image, fields, field, words):
    with Client(web_server.address) as client:
        with pytest.raises(InvalidRequest) as refused:
            client.analyze(image, **fields)
        assert words in str(refused.value) and refused.value.field == field
        # the server took it in its stride
        assert client.analyze(jpeg(np.zeros((32, 32, 3), np.uint8)), size=32).top


def test_an_unknown_model_is_not_found(web_server) -> None:
    with Client(web_server.address) as client, pytest.raises(NotFound):
        client.analyze(jpeg(np.zeros((32, 32, 3), np.uint8)), model="vgg99")


def test_the_cli_prints_the_top_channels_and_writes_the_heatmaps(web_server, tmp_path) -> None:
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(jpeg(skimage_data.astronaut()))
    server = ("--server", web_server.address)
    common = [*server, str(photo), "--layer", "block5_conv1", "--size", "64", "--top-k", "2"]
    shown = cli("analyze", *common, "--channels", "9", "--out", str(tmp_path / "out"))
    assert shown.returncode == 0, shown.stderr
    assert "block5_conv1" in shown.stdout and "caffe" in shown.stdout
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "seen.png" in written and "heatmap_0009.png" in written and len(written) == 4
    printed = cli("analyze", *common, "--json")
    assert printed.returncode == 0, printed.stderr
    mapped = json.loads(printed.stdout)
    assert mapped["layer"] == "block5_conv1" and len(mapped["top"]) == 2
    refused = cli("analyze", *server, str(photo), "--top-k", "999")
    assert (
        refused.returncode == 1
        and "top_k=999 is out of range: 0..64 [field: top_k]" in refused.stderr
    )


def test_an_image_body_over_the_limit_is_refused_before_it_is_read(web_server) -> None:
    host, port = web_server.http_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/v1/models/vgg16:analyze")
    connection.putheader("Content-Type", "image/jpeg")
    connection.putheader("Content-Length", str(MAX_IMAGE_BYTES + 1))
    connection.endheaders()  # and not one byte of the 8 MiB it declares
    answer = connection.getresponse()
    assert (
        answer.status == 413
        and f"at most {MAX_IMAGE_BYTES}" in json.loads(answer.read())["message"]
    )
    # A body sent chunked, without a length, is cut off at the limit.
    status, error = post(
        f"{web_server.http_url}/v1/models/vgg16:analyze",
        iter([b"\xff\xd8\xff" + b"\x00" * (1 << 20)] * 9),  # type: ignore[arg-type]
        "image/jpeg",
    )
    assert status == 413 and "at most" in error["message"]
