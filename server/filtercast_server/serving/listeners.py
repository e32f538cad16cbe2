"""The ports a server listens on: gRPC channel options, the open-file budget, binding.

A port that cannot be bound is a start-up failure like a bad flag: one line
naming the flag and its environment variable (PortError), never gRPC's or
asyncio's traceback.
"""

import errno
import logging
import resource
import socket
from pathlib import Path

import grpc

from filtercast.contract import (
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    SERVER_MIN_PING_INTERVAL_MS,
    join_host_port,
)
from filtercast_server.config import Settings
from filtercast_server.serving.tls import ReloadingCredentials

log = logging.getLogger(__name__)

FD_RESERVE = 128  # open files kept back from the connection limits: models, logs, metrics


class PortError(ValueError):
    """A configured port cannot be listened on (the server refuses to start)."""

    def __init__(self, field: str, host: str, port: int, reason: str) -> None:
        flag, variable = f"--{field.replace('_', '-')}", f"FILTERCAST_{field.upper()}"
        super().__init__(f"{flag} {port} ({variable}): cannot listen on {host}:{port}: {reason}")


def ensure_free(field: str, host: str, port: int) -> None:
    """PortError when `port` (the `field` setting) cannot be listened on at `host`.

    Checked before gRPC binds, which would report only "Failed to bind" (and
    log a line of its own): in use on any of the host's addresses, or on none
    of them bindable (an address this host lacks).
    """
    if not port:
        return
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise PortError(field, host, port, f"unknown address ({error.strerror})") from error
    failures = []
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise PortError(field, host, port, "the port is in use") from error
                failures.append(error)
    if failures and len(failures) == len(addresses):
        raise PortError(field, host, port, (failures[0].strerror or "").lower()) from failures[0]


def connection_budget(grpc_wanted: int, http_wanted: int = 0) -> tuple[int, int]:
    """Raise the open-file limit to its hard cap; the gRPC and HTTP connections under it.

    When both do not fit below the limit (less FD_RESERVE), each is lowered in
    proportion, so a flood on one port leaves descriptors for the other.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit above %d", soft)
    room = max(32, soft - FD_RESERVE)
    wanted = grpc_wanted + http_wanted
    if wanted <= room:
        return grpc_wanted, http_wanted
    grpc_allowed = max(16, grpc_wanted * room // wanted)
    http_allowed = max(16, room - grpc_allowed) if http_wanted else 0
    log.warning(
        "--max-connections %d and --http-max-connections %d lowered to %d and %d: the open-file "
        "limit is %d",
        grpc_wanted,
        http_wanted,
        grpc_allowed,
        http_allowed,
        soft,
    )
    return grpc_allowed, http_allowed


def server_options(settings: Settings, max_connections: int) -> list[tuple[str, int]]:
    """Channel arguments of the gRPC server: message sizes, connection hygiene, keepalive."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_seconds * 1000)),
        ("grpc.max_connection_idle_ms", int(settings.connection_idle_seconds * 1000)),
        ("grpc.max_connection_age_ms", int(settings.connection_max_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_stream_seconds * 1000)),
        # Ping idle clients so half-open connections are found and closed.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Accept the client library's keepalive pings (every 30 s, also while idle).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", SERVER_MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_concurrent_streams", 2 * settings.client_max_streams + 16),
    ]


def add_grpc_port(
    server: grpc.aio.Server, field: str, settings: Settings, *, tls: bool = True
) -> int:
    """Listen on the port of setting `field`, with TLS when a certificate is configured.

    The port actually bound (the chosen one when 0 was asked for); PortError
    when it cannot be; TLSConfigError when the TLS files are unusable.
    """
    host, port = settings.host, getattr(settings, field)
    ensure_free(field, host, port)
    address = join_host_port(host, port)
    try:
        if tls and settings.tls_cert:
            credentials = ReloadingCredentials(
                Path(settings.tls_cert),
                Path(settings.tls_key),
                Path(settings.tls_client_ca) if settings.tls_client_ca else None,
            )
            bound = server.add_secure_port(address, credentials.credentials())
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as error:  # gRPC says no more than "Failed to bind"
        raise PortError(field, host, port, "gRPC could not bind it") from error
    if not bound:
        raise PortError(field, host, port, "gRPC could not bind it")
    return bound
