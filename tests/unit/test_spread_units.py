"""What a spread request is dealt over (every server behind the addresses) and which filters."""

import socket

import pytest

from filtercast.contract import ContractError
from filtercast_client.channel import Target, backends_of
from filtercast_client.shards import SEED_BOUND, draw_seed, filters_of


def test_each_server_of_an_address_list_is_its_own_backend() -> None:
    assert backends_of("ipv4:10.0.0.1:5000,10.0.0.2:5000") == [
        Target("ipv4:10.0.0.1:5000"),
        Target("ipv4:10.0.0.2:5000"),
    ]
    assert backends_of(["10.0.0.1:5000", "[::1]:6000", "10.0.0.1:5000"]) == [
        Target("ipv4:10.0.0.1:5000"),  # twice named, one server
        Target("ipv6:[::1]:6000"),
    ]
    assert backends_of("unix:/run/filtercast.sock") == [Target("unix:/run/filtercast.sock")]


def test_a_name_gives_every_address_it_resolves_to(monkeypatch) -> None:
    def resolve(host: str, port: int, type: int) -> list:
        assert (host, port) == ("filtercast.example", 50051)
        return [
            (socket.AF_INET, type, 6, "", ("10.0.0.1", port)),
            (socket.AF_INET, type, 6, "", ("10.0.0.2", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    expected = [
        Target("ipv4:10.0.0.1:50051", "filtercast.example:50051"),  # its name for TLS
        Target("ipv4:10.0.0.2:50051", "filtercast.example:50051"),
    ]
    assert backends_of("dns:///filtercast.example:50051") == expected
    assert backends_of("filtercast.example:50051") == expected


def test_a_name_that_does_not_resolve_says_so() -> None:
    with pytest.raises(ContractError, match="cannot resolve"):
        backends_of("dns:///no-such-host.invalid:50051")


def test_a_spread_names_every_filter_in_order_once() -> None:
    assert filters_of("0:4,8,2") == [0, 1, 2, 3, 8]
    assert filters_of([5, 1, 5]) == [5, 1]
    for open_spec in ("8:", "all"):
        with pytest.raises(ValueError, match="closed ranges"):
            filters_of(open_spec)
    with pytest.raises(ValueError, match="names its filters"):
        filters_of(None)
    with pytest.raises(ValueError):
        filters_of("0:x")
    with pytest.raises(ValueError, match="at most 65536"):  # refused before it is expanded
        filters_of("0:1000000000")


def test_a_drawn_seed_is_within_the_seed_range() -> None:
    assert all(0 <= draw_seed() < SEED_BOUND for _ in range(100))
