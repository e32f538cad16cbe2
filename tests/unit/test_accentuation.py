"""A start image is checked, squared and hashed before any ascent; planning refuses what clashes."""

import dataclasses
import io
import math

import numpy as np
import pytest
from PIL import Image

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.accentuation import (
    DEFAULT_PULL,
    MAX_PULL,
    Accentuate,
    accentuate_of,
    start_image,
)
from filtercast_server.cache.keys import filter_keys
from filtercast_server.errors import InvalidRequestError
from filtercast_server.images import square_view
from filtercast_server.planning import make_plan
from tests.support.standin import Model
from tests.unit.test_images import png_declaring

RNG = np.random.default_rng(4)
PHOTO = (RNG.random((40, 60, 3)) * 255).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_start_is_the_square_view_of_the_photo_at_the_size_asked() -> None:
    start = start_image(png(PHOTO), 32, 3)
    assert (start.pixels == square_view(PHOTO, 32)).all()
    assert (start.pull, start.space) == (DEFAULT_PULL["pixels"], "pixels")
    assert start.at(32).dtype == np.float32
    np.testing.assert_array_equal(start.at(32), start.pixels / np.float32(255))
    smaller = start.at(16)  # an earlier round of upscale
    assert smaller.shape == (16, 16, 3) and 0.0 <= smaller.min() <= smaller.max() <= 1.0
    gray = start_image(png(PHOTO), 32, 1, pull=3.0, space="features")
    assert gray.pixels.shape == (32, 32, 1) and (gray.pull, gray.space) == (3.0, "features")


def test_its_identity_moves_with_the_pixels_the_pull_and_its_space() -> None:
    base = start_image(png(PHOTO), 32, 3)
    assert base.identity() == start_image(png(PHOTO), 32, 3).identity()
    changed = PHOTO.copy()
    changed[20, 30, 0] ^= 0xFF  # one pixel of the centre
    others = [
        start_image(png(changed), 32, 3),
        start_image(png(PHOTO), 32, 3, pull=5.0),
        start_image(png(PHOTO), 32, 3, pull=5.0, space="features"),
        start_image(png(PHOTO), 24, 3),
    ]
    identities = {base.identity(), *(other.identity() for other in others)}
    assert len(identities) == 5
    assert base.fields() == {
        "start_image_sha256": base.sha256,
        "pull": DEFAULT_PULL["pixels"],
        "pull_space": "pixels",
    }


@pytest.mark.parametrize(
    ("data", "pull", "space", "field", "words"),
    [
        (png(PHOTO), -1.0, "", "accentuate.pull", "0..1000"),
        (png(PHOTO), MAX_PULL + 1, "", "accentuate.pull", "out of range"),
        (png(PHOTO), math.nan, "", "accentuate.pull", "out of range"),
        (png(PHOTO), None, "latent", "accentuate.pull_space", "valid: pixels, features"),
        (b"GIF89a" + bytes(40), None, "", "accentuate.image", "PNG"),
        (png(PHOTO)[:60], None, "", "accentuate.image", ""),
        (png_declaring(60_000, 60_000), None, "", "accentuate.image", "pixels"),
    ],
)
def test_a_bad_start_is_refused_naming_its_field(data, pull, space, field, words) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        start_image(data, 32, 3, pull, space)
    assert raised.value.field == field and words in str(raised.value)


def test_the_wire_message_becomes_what_planning_takes() -> None:
    assert accentuate_of(pb.VisualizeFiltersRequest()) is None
    request = pb.VisualizeFiltersRequest()
    request.accentuate.image = b"bytes"
    assert accentuate_of(request) == Accentuate(b"bytes", None, "pixels")
    request.accentuate.pull = 0.1  # a float32 on the wire, the decimal the client meant
    request.accentuate.pull_space = pb.PULL_SPACE_FEATURES
    assert accentuate_of(request) == Accentuate(b"bytes", 0.1, "features")
    request.accentuate.pull_space = 9  # type: ignore[assignment]
    with pytest.raises(InvalidRequestError, match="PIXELS, FEATURES") as raised:
        accentuate_of(request)
    assert raised.value.field == "accentuate.pull_space"
    empty = pb.VisualizeFiltersRequest(accentuate=pb.Accentuation())
    with pytest.raises(InvalidRequestError, match="PNG or JPEG bytes") as raised:
        accentuate_of(empty)
    assert raised.value.field == "accentuate.image"


def plan_with(accentuate: Accentuate | None, preset: str = "classic", **overrides):
    overrides = {"size": 32, **overrides}
    return make_plan(
        {"vgg16": Model()}, preset=preset, overrides=overrides, seed=3, accentuate=accentuate
    )


def test_planning_gives_every_picture_the_start_and_its_structure_the_pull() -> None:
    plan = plan_with(Accentuate(png(PHOTO), 2.0, "features"))
    assert plan.start is not None and plan.start.size == 32
    assert plan.structure.pull == "features"
    assert {job.start for job in plan.jobs(plan.filters)} == {plan.start}
    only_start = plan_with(Accentuate(png(PHOTO), 0.0))
    assert only_start.start is not None and only_start.structure.pull is None
    upscale = plan_with(Accentuate(png(PHOTO)), preset="upscale", upscale_rounds=2)
    assert upscale.start is not None and upscale.start.size == upscale.params.round_sizes()[-1]


def test_revive_with_a_start_image_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="leave revive at 0") as raised:
        plan_with(Accentuate(png(PHOTO)), revive=1)
    assert raised.value.field == "revive"


def test_the_cache_key_holds_the_start_image_and_plain_keys_do_not_move() -> None:
    plain = plan_with(None)
    started = plan_with(Accentuate(png(PHOTO)))
    other = PHOTO.copy()
    other[20, 30] = 255 - other[20, 30]
    keys = [
        filter_keys(plan, "standin")[0]
        for plan in (
            plain,
            started,
            plan_with(Accentuate(png(other))),
            plan_with(Accentuate(png(PHOTO), 7.0)),
        )
    ]
    assert len(set(keys)) == 4
    assert filter_keys(dataclasses.replace(started, start=None), "standin") == filter_keys(
        plain, "standin"
    )
