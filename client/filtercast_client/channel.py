"""How a client reaches servers: targets, balancing, retries, keepalive, TLS."""

import ipaddress
import json
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from filtercast import contract
from filtercast.contract import MAX_MESSAGE_BYTES, SERVICE, ContractError

# UNAVAILABLE is retried with exponential backoff, and only until the first
# response arrives: a stream that has started delivering is never repeated.
# gRPC's own retry policy does this for the unary calls; the stream retries in
# this library, because grpcio's sync unary_stream with a retry policy can hang
# past its deadline when the server dies before answering.
RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 5,
    "initialBackoff": "0.2s",
    "maxBackoff": "5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
UNARY_METHODS = ("ListModels", "DescribeModel")


def service_config(attempts: int) -> str:
    """round_robin over every address of the target; retries for the unary methods."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if attempts > 1:
        names = [{"service": SERVICE, "method": method} for method in UNARY_METHODS]
        policy = {**RETRY_POLICY, "maxAttempts": attempts}
        config["methodConfig"] = [{"name": names, "retryPolicy": policy}]
    return json.dumps(config)


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (0-based) of a stream, as RETRY_POLICY spaces them."""
    initial = float(RETRY_POLICY["initialBackoff"].rstrip("s"))
    ceiling = float(RETRY_POLICY["maxBackoff"].rstrip("s"))
    delay = min(ceiling, initial * RETRY_POLICY["backoffMultiplier"] ** attempt)
    return float(random.uniform(0.5, 1.0) * delay)  # jitter: replicas are not hit in lockstep


@dataclass(frozen=True)
class TLS:
    """How to reach a TLS server: the roots to trust and, for mTLS, this client's key pair."""

    ca: bytes | None = None  # PEM roots; None: the system's
    cert: bytes | None = None  # PEM certificate chain of this client (mTLS)
    key: bytes | None = None
    server_name: str | None = None  # name to check in the server's certificate, if not the host

    @classmethod
    def from_files(
        cls,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        server_name: str | None = None,
    ) -> "TLS":
        """TLS settings from PEM files (any may be None)."""

        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        if (cert is None) != (key is None):
            raise ValueError("a client certificate and its key go together")
        return cls(read(ca), read(cert), read(key), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials for grpc.secure_channel."""
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)


@dataclass(frozen=True)
class Target:
    """A gRPC target string, and the name a TLS server's certificate should carry."""

    target: str
    authority: str | None = None  # set when hostnames were resolved to addresses here


def _literal_family(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def target_of(addresses: str | Sequence[str]) -> Target:
    """The gRPC target of one address, a gRPC target string, or several HOST:PORT.

    Several addresses become one ipv4:/ipv6: list that round_robin balances
    over; hostnames among them are resolved now (every address they have).
    """
    if isinstance(addresses, str):
        addresses = [addresses]
    if not addresses:
        raise ValueError("no server address given")
    if len(addresses) == 1:
        (address,) = addresses
        if not contract.has_scheme(address):
            contract.split_host_port(address)  # a clear error for a malformed address
        return Target(address)
    resolved: list[tuple[int, str]] = []
    authority = None
    for address in addresses:
        if contract.has_scheme(address):
            raise ContractError(f"{address!r}: a gRPC target (with a scheme) must come alone")
        host, port = contract.split_host_port(address)
        family = _literal_family(host)
        if family is not None:
            resolved.append((family, contract.join_host_port(host, port)))
            continue
        authority = authority or address
        resolved += _resolve(host, port)
    families = {version for version, _ in resolved}
    if authority is None and len(families) > 1:  # only literals, of both families
        raise ContractError(
            "IPv4 and IPv6 addresses cannot be balanced in one channel (gRPC lists hold one "
            "family); give addresses of one family, or a dns:/// name"
        )
    # gRPC lists hold one family; a hostname with both uses IPv4 (reachable from more networks).
    version = 4 if 4 in families else 6
    chosen = list(dict.fromkeys(address for v, address in resolved if v == version))
    return Target(f"ipv{version}:{','.join(chosen)}", authority)


def _resolve(host: str, port: int) -> list[tuple[int, str]]:
    """(IP version, HOST:PORT) for every address `host` has."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ContractError(f"cannot resolve {host!r}: {error.strerror}") from error
    return [
        (6 if family == socket.AF_INET6 else 4, contract.join_host_port(str(sockaddr[0]), port))
        for family, *_, sockaddr in infos
    ]


def backends_of(addresses: str | Sequence[str]) -> list[Target]:
    """Every server behind `addresses`, each as its own target: what a spread request needs.

    A dns:/// name or a hostname gives one per address it resolves to (now);
    an ipv4:/ipv6: list one per entry; several HOST:PORT each of theirs. Any
    other target (unix:) is one server.
    """
    if isinstance(addresses, str):
        addresses = [addresses]
    found: list[Target] = []
    for address in addresses:
        scheme, _, rest = address.partition(":") if contract.has_scheme(address) else ("", "", "")
        if scheme in ("ipv4", "ipv6"):
            found += [Target(f"{scheme}:{entry}") for entry in rest.split(",") if entry]
            continue
        if scheme not in ("", "dns"):
            found.append(Target(address))
            continue
        name = rest.rsplit("/", 1)[-1] if scheme == "dns" else address
        host, port = contract.split_host_port(name)
        family = _literal_family(host)
        if family is not None:
            found.append(Target(f"ipv{family}:{name}"))
            continue
        found += [Target(f"ipv{v}:{a}", name) for v, a in _resolve(host, port)]
    return list({target.target: target for target in found}.values())


def channel_options(
    attempts: int = 5, tls: TLS | None = None, authority: str | None = None
) -> list[tuple[str, Any]]:
    """Channel options: message limits, keepalive, retries, balancing, TLS name."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", contract.CLIENT_KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", contract.CLIENT_KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.enable_retries", int(attempts > 1)),
        ("grpc.service_config", service_config(attempts)),
        # A connection of its own: grpcio otherwise shares one between every channel of
        # the process with the same target, and the server's per-connection stream limit
        # (twice the per-client limit, plus 16) then refuses the streams of many clients
        # in one process (REFUSED_STREAM, seen as UNAVAILABLE).
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    elif authority is not None:
        options.append(("grpc.default_authority", authority))
    return options
