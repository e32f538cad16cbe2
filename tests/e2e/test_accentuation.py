"""Accentuation through the real server: gRPC, HTTP and the CLI, a real photograph, bad starts."""

import hashlib
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from PIL import Image

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client import Client
from filtercast_client.errors import InvalidRequest
from filtercast_client.events import Accepted, FilterImage
from filtercast_client.request import build_request
from filtercast_server.images import decode_image, square_view
from tests.e2e.test_analyze import jpeg, post
from tests.e2e.test_client_cli import cli

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the photographs")

SMALL = {"size": 32, "steps": 3, "pad": 4, "jitter": 2}
CHELSEA = skimage_data.chelsea()


def start_hash(photo: bytes, size: int) -> str:
    """What the server starts from: the photo decoded (JPEG draft mode), its centre square."""
    pixels = decode_image(photo, shrink_to=size).pixels
    return hashlib.sha256(square_view(pixels, size).tobytes()).hexdigest()


def stream(address: str, **request) -> list:
    with Client(address) as client:
        fields = {"preset": "robust", "filters": "0:3", "seed": 1, "overrides": SMALL, **request}
        return list(client.visualize(**fields))


def pictures(events: list) -> dict[int, bytes]:
    return {e.index: e.image.tobytes() for e in events if isinstance(e, FilterImage)}


def test_a_start_image_is_said_in_accepted_and_its_pictures_reproduce(web_server) -> None:
    photo = jpeg(CHELSEA)
    first = stream(web_server.address, image=photo, pull=50)
    accepted = first[0]
    assert isinstance(accepted, Accepted)
    params = accepted.params
    assert params["start_image_sha256"] == start_hash(photo, 32)
    assert (params["pull"], params["pull_space"]) == (50.0, "pixels")
    assert pictures(first) == pictures(stream(web_server.address, image=photo, pull=50))
    plain = stream(web_server.address)
    assert not {"start_image_sha256", "pull", "pull_space"} & set(plain[0].params)
    other = stream(web_server.address, image=jpeg(skimage_data.coffee()), pull=50)
    for index, picture in pictures(first).items():  # another start, other pictures
        assert picture != pictures(plain)[index] and picture != pictures(other)[index]


@pytest.mark.parametrize(
    ("request_fields", "field", "words"),
    [
        ({"image": b"GIF89a" + bytes(64)}, "accentuate.image", "PNG"),
        ({"image": b"\x89PNG\r\n\x1a\n" + bytes(30)}, "accentuate.image", ""),
        ({"pull": 5000.0}, "accentuate.pull", "0..1000"),
        (
            {"preset": "classic", "overrides": {"size": 32, "steps": 3, "revive": 1}},
            "overrides.revive",
            "leave revive at 0",
        ),
    ],
)
def test_a_bad_start_is_invalid_argument_naming_its_field(
    web_server, request_fields, field, words
) -> None:
    fields = {"preset": "robust", "image": jpeg(CHELSEA), "overrides": SMALL, **request_fields}
    with Client(web_server.address) as client, pytest.raises(InvalidRequest) as raised:
        list(client.visualize(filters="0:2", **fields))
    assert raised.value.field == field and words in raised.value.message


def test_http_takes_the_start_image_in_json_on_its_own_route(web_server) -> None:
    buffer = io.BytesIO()
    Image.fromarray(CHELSEA).save(buffer, format="PNG")
    photo = buffer.getvalue()
    message = build_request(preset="robust", filters="0:2", seed=1, overrides=SMALL, image=photo)
    body = json.dumps(json_format.MessageToDict(message)).encode()
    assert len(body) > 64 * 1024  # more than the plain route takes
    status, refusal = post(web_server.http_url + "/v1/visualize", body, "application/json")
    assert status == 413 and "/v1/visualize:accentuate" in refusal["message"]
    url = web_server.http_url + "/v1/visualize:accentuate"
    taken = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(taken, timeout=120) as response:
        lines = [json.loads(line)["result"] for line in response.read().decode().splitlines()]
    events = [json_format.ParseDict(line, pb.VisualizeFiltersResponse()) for line in lines]
    assert events[0].accepted.params.start_image_sha256 == start_hash(photo, 32)
    grpc_pictures = pictures(stream(web_server.address, image=photo, filters="0:2"))
    http_pictures = {e.filter.index: e.filter.image.data for e in events if e.HasField("filter")}
    assert len(http_pictures) == 2
    for index, png in http_pictures.items():  # the same picture as gRPC gives
        pixels = np.asarray(Image.open(io.BytesIO(png)))
        assert pixels.tobytes() == grpc_pictures[index]
    assert post(url, photo, "image/png")[0] == 415  # JSON only on this route


def test_the_cli_accentuates_a_photo_file(web_server, tmp_path: Path) -> None:
    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(jpeg(CHELSEA))
    out = tmp_path / "out"
    arguments = ["--server", web_server.address, "--preset", "robust", "--filters", "0:2"]
    arguments += ["--size", "32", "--steps", "2", "--seed", "3", "--out", str(out)]
    result = cli("visualize", *arguments, "--image", str(photo), "--pull-space", "features")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["start_image_sha256"] == start_hash(photo.read_bytes(), 32)
    assert manifest["params"]["pull_space"] == "features"
    assert manifest["params"]["pull"] == 8.0
    no_image = cli("visualize", *arguments, "--pull", "3")
    assert no_image.returncode == 2 and "give --image too" in no_image.stderr
