"""The objective grammar: parsed on the client, read back by the server as the same objective.

Round trip: any objective the server can write as text (Objective.text) parses
back into the terms it came from, so what Accepted reports is what was asked.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from filtercast import contract
from filtercast.contract import ContractError, parse_interpolation, parse_objective
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.errors import InvalidRequest
from filtercast_client.request import build_request
from filtercast_server.errors import InvalidRequestError
from filtercast_server.objectives import Objective, Term, objective_of


def read(text: str) -> Objective:
    return objective_of(parse_objective(text), "objectives[0]")


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("block5_conv1:12", [Term("channel", "block5_conv1", 12)]),
        ("block5_conv1:12@center", [Term("neuron", "block5_conv1", 12)]),
        ("block5_conv1:12@(3,5)", [Term("neuron", "block5_conv1", 12, position=(3, 5))]),
        ("layer(block4_conv3)", [Term("layer", "block4_conv3")]),
        ("dense_1:3", [Term("channel", "dense_1", 3)]),  # a unit: the server knows the layer
        (
            "block5_conv1:12 - 0.5*block5_conv1:40",
            [Term("channel", "block5_conv1", 12), Term("channel", "block5_conv1", 40, weight=-0.5)],
        ),
        ("-2 * outer/inner:1", [Term("channel", "outer/inner", 1, weight=-2.0)]),
        (
            "direction(b, [1, 0, 2.5], cossim=1)",
            [Term("direction", "b", vector=(1.0, 0.0, 2.5), cossim_power=1.0)],
        ),
        (
            "my-layer:3-my-layer:4",
            [Term("channel", "my-layer", 3), Term("channel", "my-layer", 4, weight=-1.0)],
        ),
    ],
)
def test_every_form_of_the_grammar(text: str, terms: list[Term]) -> None:
    assert read(text) == Objective(tuple(terms))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "cannot read ''"),
        ("block5_conv1", "cannot read 'block5_conv1'"),
        ("a:1 +", "cannot read ''"),
        ("a:1 b:2", "expected + or -"),
        ("a:1 * b", "expected + or -"),
        ("direction(a, v.npy)", "give the values inline"),
        ("direction(a, [])", "needs 1..8192 values"),
        ("a:99999999999", "indices go up to"),
        (" + ".join(["a:1"] * 17), "more than 16 terms"),
    ],
)
def test_what_does_not_parse_says_why(text: str, words: str) -> None:
    with pytest.raises(ContractError, match=words.replace("(", r"\(").replace("+", r"\+")):
        parse_objective(text)


NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}(/[a-z][a-z0-9_]{0,5})?", fullmatch=True)
WEIGHTS = st.sampled_from([1.0, -1.0, 0.5, -0.25, 2.0, 3.0, -10.0, 0.125])
TERMS = st.one_of(
    st.builds(
        lambda name, i, w: Term("channel", name, i, weight=w), NAMES, st.integers(0, 4096), WEIGHTS
    ),
    st.builds(
        lambda name, i, y, x, w: Term("neuron", name, i, position=(y, x), weight=w),
        NAMES,
        st.integers(0, 512),
        st.integers(0, 64),
        st.integers(0, 64),
        WEIGHTS,
    ),
    st.builds(lambda name, w: Term("layer", name, weight=w), NAMES, WEIGHTS),
)


@given(st.lists(TERMS, min_size=1, max_size=6))
def test_the_servers_text_parses_back_to_the_same_objective(terms: list[Term]) -> None:
    objective = Objective(tuple(terms))
    assert read(objective.text()) == objective


def test_an_interpolation_splits_at_the_dots_outside_brackets() -> None:
    parsed = parse_interpolation("direction(b, [1.5, 2]).. 2*b:3", 4)
    assert parsed.frames == 4 and parsed.end.terms[0].weight == 2.0
    assert list(parsed.start.terms[0].vector) == [1.5, 2.0]
    with pytest.raises(ContractError, match=r"START\.\.END"):
        parse_interpolation("b:1", 4)


def test_direction_files_are_numpy_vectors_never_pickles(tmp_path) -> None:
    np.save(tmp_path / "cav.npy", np.arange(4, dtype=np.float32))
    request = build_request(objectives=[f"direction(b, {tmp_path / 'cav.npy'})"])
    assert list(request.objectives[0].terms[0].vector) == [0, 1, 2, 3]
    np.save(tmp_path / "grid.npy", np.zeros((2, 2)))
    np.save(tmp_path / "pickled.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    for name, words in [
        ("grid.npy", "shape"),
        ("pickled.npy", "cannot read"),
        ("no.npy", "cannot read"),
    ]:
        with pytest.raises(InvalidRequest, match=words) as raised:
            build_request(objectives=[f"direction(b, {tmp_path / name})"])
        assert raised.value.field == "objectives"


def test_the_wire_refuses_an_unknown_kind_and_too_many_terms() -> None:
    message = pb.Objective(terms=[pb.ObjectiveTerm(kind=99, layer="b")])
    with pytest.raises(InvalidRequestError, match="kind 99 is unknown"):
        objective_of(message, "objectives[0]")
    many = pb.Objective(terms=[pb.ObjectiveTerm(layer="b")] * (contract.MAX_TERMS + 1))
    with pytest.raises(InvalidRequestError, match="at most 16"):
        objective_of(many, "objectives[0]")
