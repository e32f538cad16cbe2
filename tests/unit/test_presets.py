"""Presets keep the seeds' defaults; overrides and filter specs are validated."""

import pytest

from filtercast_server.errors import InvalidRequestError
from filtercast_server.overrides import resolve
from filtercast_server.params import Limits
from filtercast_server.presets import CATALOG
from filtercast_server.selection import select_filters


def test_classic_preset_is_the_classic_seed() -> None:
    p, grid = CATALOG["classic"].params, CATALOG["classic"].grid
    assert (p.model, p.layer, p.size, p.steps, p.step_size) == (
        "vgg16",
        "block5_conv1",
        128,
        20,
        1.0,
    )
    assert (p.init_scale, p.init_offset, p.gradient_norm) == (20.0, 128.0, "rms")
    assert (p.dead_threshold, p.deprocess_std, p.deprocess_eps) == (0.0, 0.1, 1e-7)
    assert (grid.n, grid.margin, grid.order) == (8, 5, "loss")
    assert CATALOG["classic"].default_filters == 200
    assert p.round_sizes() == [128] and p.resize_targets() == [None]


def test_upscale_preset_grows_from_79_to_412_in_nine_rounds() -> None:
    p = CATALOG["upscale"].params
    assert p.round_sizes() == [79, 95, 114, 137, 165, 198, 238, 286, 343]
    assert p.resize_targets() == [95, 114, 137, 165, 198, 238, 286, 343, 412]
    assert (p.steps, p.dead_threshold, p.deprocess_std) == (15, 1e-7, 0.25)
    assert CATALOG["upscale"].grid.n is None and CATALOG["upscale"].default_filters is None


def test_keras_io_preset_is_the_keras_io_example() -> None:
    p = CATALOG["keras_io"].params
    assert (p.model, p.layer, p.size, p.steps, p.step_size) == (
        "resnet50v2",
        "conv3_block4_out",
        180,
        30,
        10.0,
    )
    assert (p.init_scale, p.init_offset, p.gradient_norm, p.border) == (0.25, 0.0, "l2", 2)
    assert (p.deprocess_std, p.deprocess_eps, p.crop, p.output_size) == (0.15, 1e-5, 25, 130)
    assert p.dead_threshold is None and CATALOG["keras_io"].grid.order == "index"


def test_overrides_apply_and_keep_the_rest() -> None:
    recipe = resolve("classic", {"size": 64, "steps": 3, "grid_n": 4}, Limits())
    p = recipe.params
    assert (p.size, p.steps, p.layer) == (64, 3, "block5_conv1")
    assert (recipe.grid.n, recipe.grid.margin, recipe.default_filters) == (4, 5, 200)
    # The grid is not part of the ascent: requests that differ only there share batches.
    assert p == resolve("classic", {"size": 64, "steps": 3}, Limits()).params


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("nope", {}, "unknown preset 'nope'; valid: classic, upscale, keras_io"),
        ("classic", {"size": 8}, "size=8 is out of range; valid: 16..512"),
        ("classic", {"size": 4096}, "size=4096 is out of range; valid: 16..512"),
        ("classic", {"steps": 0}, "steps=0 is out of range; valid: 1..200"),
        ("classic", {"step_size": -1.0}, "step_size=-1.0 is out of range"),
        ("classic", {"step_size": float("nan")}, "step_size must be finite, got nan"),
        ("classic", {"colour": 1}, "unknown parameter(s) colour; valid:"),
        ("classic", {"crop": 64}, "crop=64 is out of range; valid: 0..63"),
        ("classic", {"grid_n": 0}, "grid_n=0 is out of range"),
        ("classic", {"gradient_norm": "l1"}, "gradient_norm must be rms or l2"),
        ("upscale", {"upscale_rounds": 13}, "upscale_rounds=13 is out of range; valid: 0..12"),
        ("upscale", {"size": 60}, "from 60 px starts at 11 px, below the minimum 16"),
    ],
)
def test_bad_overrides_say_what_is_valid(preset: str, overrides: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        resolve(preset, overrides, Limits())
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0:4", [0, 1, 2, 3]),
        ("3,1,2", [3, 1, 2]),
        ("0:2,5,7:9", [0, 1, 5, 7, 8]),
        (":3", [0, 1, 2]),
        ("510:", [510, 511]),
        ("1,1,2", [1, 2]),
        (None, list(range(200))),
        ("all", list(range(512))),
        (" 1 , 4:6 ", [1, 4, 5]),
    ],
)
def test_filter_specs(spec: str | None, expected: list[int]) -> None:
    assert select_filters(spec, channels=512, default_count=200) == expected


def test_default_filters_clamp_to_the_layer() -> None:
    assert select_filters(None, channels=64, default_count=200) == list(range(64))
    assert select_filters(None, channels=10, default_count=None) == list(range(10))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0:600", "filter 512 is out of range; this layer has 512 filters: 0..511"),
        ("-1", "bad filter spec item '-1'"),
        ("a:b", "bad filter spec item 'a:b'"),
        ("5:5", "empty filter range '5:5'"),
        ("1,,2", "bad filter spec item ''"),
        ("", "empty filter spec"),
        ("0:8:2", "steps (A:B:STEP) are not supported"),
    ],
)
def test_bad_filter_specs(spec: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        select_filters(spec, channels=512, default_count=None)
    assert message in str(info.value)
