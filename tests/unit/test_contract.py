"""The neutral contract module: one filter-spec grammar, addresses, enum names, and who
imports whom (the server never imports the client, the client never the server)."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filtercast import contract
from filtercast.contract import ContractError, FilterSpan, parse_filter_spec
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.client import build_request
from filtercast_client.errors import InvalidRequest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("spec", "spans"),
    [
        ("0:64", [FilterSpan(0, 64)]),
        ("1,5,9", [FilterSpan(1, 2), FilterSpan(5, 6), FilterSpan(9, 10)]),
        ("0:8,100:104", [FilterSpan(0, 8), FilterSpan(100, 104)]),
        (":3,5", [FilterSpan(0, 3), FilterSpan(5, 6)]),
        ("8:", [FilterSpan(8, None)]),
        ("ALL", [FilterSpan(0, None)]),
        (" 2 : 4 ", [FilterSpan(2, 4)]),
    ],
)
def test_valid_specs(spec: str, spans: list[FilterSpan]) -> None:
    assert parse_filter_spec(spec) == spans


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "empty filter spec"),
        ("  ", "empty filter spec"),
        ("abc", "bad filter spec item 'abc'"),
        ("1:3:2", "steps (A:B:STEP) are not supported"),
        ("1,,2", "bad filter spec item ''"),
        ("-1", "bad filter spec item '-1'"),
        ("5:2", "empty filter range '5:2'"),
        ("1.5", "bad filter spec item '1.5'"),
        ("3000000000", "indices go up to 2147483647"),
    ],
)
def test_invalid_specs_say_what_is_valid(spec: str, words: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse_filter_spec(spec)
    assert words in str(caught.value) and caught.value.field == "filters"


spans = st.lists(
    st.tuples(st.integers(0, 5000), st.integers(1, 100), st.booleans()), min_size=1, max_size=6
)


@given(spans)
def test_a_spec_survives_the_wire(items: list[tuple[int, int, bool]]) -> None:
    """Text -> spans -> FilterSelection -> spans gives back the same spans."""
    text = ",".join(f"{a}:" if open_ else f"{a}:{a + n}" for a, n, open_ in items)
    parsed = parse_filter_spec(text)
    assert contract.spans_of(contract.selection_message(parsed)) == parsed


def test_a_malformed_wire_selection_is_refused() -> None:
    empty = pb.FilterSelection(ranges=pb.FilterRanges())
    with pytest.raises(ContractError, match=r"filters\.ranges is empty"):
        contract.spans_of(empty)
    backwards = pb.FilterSelection(range=pb.FilterRange(start=5, stop=2))
    with pytest.raises(ContractError, match="start must be < stop"):
        contract.spans_of(backwards)


def test_client_arguments_are_checked_before_any_call() -> None:
    assert build_request(preset="Classic", precision="BFLOAT16").preset == pb.PRESET_CLASSIC
    request = build_request(size=48, steps=3, overrides={"crop": 2})
    assert (request.overrides.size, request.overrides.steps, request.overrides.crop) == (48, 3, 2)
    for kwargs, words in [
        ({"preset": "nope"}, "unknown preset 'nope'; valid: classic, upscale, keras_io"),
        ({"precision": "fp8"}, "unknown precision 'fp8'; valid: auto, float32, bfloat16"),
        ({"filters": "1:3:2"}, "steps (A:B:STEP) are not supported"),
        ({"size": 48, "overrides": {"size": 32}}, "size given twice"),
        ({"overrides": {"colour": 1}}, "unknown override 'colour'"),
        ({"seed": -1}, "seed:"),
        ({"filters": [2**31]}, "filters:"),
        ({"size": "64"}, "overrides.size:"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            build_request(**kwargs)
        assert words in caught.value.message, kwargs


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("localhost:50051", ("localhost", 50051)),
        ("[::1]:50051", ("::1", 50051)),
        ("10.0.0.1:1", ("10.0.0.1", 1)),
    ],
)
def test_addresses(address: str, expected: tuple[str, int]) -> None:
    assert contract.split_host_port(address) == expected
    assert contract.join_host_port(*expected) == address


def test_a_picture_is_checked_before_it_is_decoded() -> None:
    import io

    from PIL import Image

    from filtercast_client.errors import ProtocolError
    from filtercast_client.events import decode_image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    mislabelled = pb.Image(format=pb.IMAGE_FORMAT_PNG, data=buffer.getvalue(), width=8, height=8)
    with pytest.raises(ProtocolError, match="a PNG of 64x64 pixels labelled 8x8"):
        decode_image(mislabelled)
    gray = pb.Image(format=pb.IMAGE_FORMAT_RAW, data=bytes(16), width=4, height=4, channels=1)
    assert decode_image(gray).shape == (4, 4, 1)
