"""Client library of the filtercast service (never imports TensorFlow or the server).

    from filtercast_client import Client, FilterImage

    with Client("localhost:50051") as client:
        for event in client.visualize(layer="block5_conv1", filters="0:16", size=64):
            if isinstance(event, FilterImage) and event.image is not None:
                ...

Addresses: ``host:port``, ``[ipv6]:port``, a gRPC target such as
``dns:///filtercast.example:50051`` (every address the name resolves to is
used, round-robin), or a list of ``host:port`` (hostnames resolved once, when
the client is made). ``tls=`` reaches a TLS (or mTLS) server, ``token=``
sends a bearer token on every call. Failures raise the typed errors of
filtercast_client.errors; leaving a stream early (``break``, or dropping the
iterator) cancels it on the server.
"""

import asyncio
import functools
import ipaddress
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc

from filtercast import contract
from filtercast.contract import MAX_MESSAGE_BYTES, SERVICE, ContractError
from filtercast.v1 import filtercast_pb2 as pb
from filtercast.v1 import filtercast_pb2_grpc as pb_grpc
from filtercast_client.errors import (
    Cancelled,
    FiltercastError,
    InvalidRequest,
    Unavailable,
    from_rpc_error,
    retry_after,
)
from filtercast_client.events import (
    Accepted,
    Event,
    EventChecker,
    FilterImage,
    GridImage,
    ModelInfo,
    ServerInfo,
    Summary,
)

__all__ = [
    "TLS",
    "Accepted",
    "AsyncClient",
    "AsyncVisualization",
    "Client",
    "Event",
    "FilterImage",
    "GridImage",
    "Summary",
    "Visualization",
    "build_request",
    "retry_after",
]

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
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise ContractError(f"cannot resolve {host!r}: {error.strerror}") from error
        for family_code, *_, sockaddr in infos:
            version = 6 if family_code == socket.AF_INET6 else 4
            resolved.append((version, contract.join_host_port(str(sockaddr[0]), port)))
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


def build_request(
    *,
    model: str = "",
    layer: str = "",
    filters: str | Sequence[int] | None = None,
    preset: str = "classic",
    size: int | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int | None = None,
    precision: str = "auto",
    image_format: str = "png",
    grid: bool = True,
    grid_n: int | None = None,
    grid_margin: int | None = None,
    keep_dead_filters: bool = False,
) -> pb.VisualizeFiltersRequest:
    """A VisualizeFiltersRequest (see Client.visualize); InvalidRequest names a bad argument."""
    try:
        request = pb.VisualizeFiltersRequest(
            model=model,
            layer=layer,
            preset=contract.lookup("preset", contract.PRESETS, preset),
            precision=contract.lookup("precision", contract.PRECISIONS, precision),
            image_format=contract.lookup("image_format", contract.IMAGE_FORMATS, image_format),
            keep_dead_filters=keep_dead_filters,
        )
        if isinstance(filters, str):
            request.filters.CopyFrom(
                contract.selection_message(contract.parse_filter_spec(filters))
            )
        elif filters is not None:
            request.filters.list.indices.extend(int(i) for i in filters)
    except ContractError as error:
        raise InvalidRequest(
            grpc.StatusCode.INVALID_ARGUMENT, str(error), field=error.field
        ) from error
    except (ValueError, TypeError) as error:  # protobuf: an index beyond int32, not a number
        raise InvalidRequest(
            grpc.StatusCode.INVALID_ARGUMENT, f"filters: {error}", field="filters"
        ) from error
    named = {"size": size, "steps": steps, "step_size": step_size}
    given = {name: value for name, value in named.items() if value is not None}
    for name, value in {**dict(overrides or {}), **given}.items():
        if name in given and name in (overrides or {}):
            raise InvalidRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{name} given twice (as {name}= and in overrides)",
                field=f"overrides.{name}",
            )
        if name not in pb.Overrides.DESCRIPTOR.fields_by_name:
            valid = ", ".join(pb.Overrides.DESCRIPTOR.fields_by_name)
            raise InvalidRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown override {name!r}; valid: {valid}",
                field="overrides",
            )
        _set(f"overrides.{name}", functools.partial(setattr, request.overrides, name, value))
    if seed is not None:
        _set("seed", functools.partial(setattr, request, "seed", seed))
    request.grid.disabled = not grid
    if grid_n is not None:
        _set("grid.n", functools.partial(setattr, request.grid, "n", grid_n))
    if grid_margin is not None:
        _set("grid.margin", functools.partial(setattr, request.grid, "margin", grid_margin))
    return request


def _set(field: str, assign: Callable[[], None]) -> None:
    """Run one field assignment; a value protobuf rejects is InvalidRequest naming the field."""
    try:
        assign()
    except (ValueError, TypeError) as error:  # out of int32/uint64 range, or not a number
        raise InvalidRequest(
            grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {error}", field=field
        ) from error


class _Stream:
    """Retry, cancel and checking bookkeeping shared by the sync and async streams."""

    def __init__(self, start: Callable[[float | None], Any], timeout: float | None, attempts: int):
        self._start = start
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._attempts = max(1, attempts)
        self._call: Any = None
        self._cancelled = False

    def _remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def _begin(self) -> Any:
        self._call = self._start(self._remaining())
        if self._cancelled:  # cancelled while it started: stop it at once
            self._call.cancel()
        return self._call

    def _retry_delay(self, error: FiltercastError, attempt: int, started: bool) -> float | None:
        """Seconds to wait before trying again, or None to give up with `error`."""
        if started or self._cancelled or not isinstance(error, Unavailable):
            return None
        if attempt + 1 >= self._attempts:
            return None
        delay = backoff(attempt)
        remaining = self._remaining()
        return None if remaining is not None and remaining <= delay else delay

    def _stop(self) -> None:
        """The consumer left before the end: cancel the call so the server stops its work."""
        if self._call is not None:
            self._call.cancel()

    def _release(self) -> None:
        """Drop the ended call.

        An error's traceback keeps this stream alive, and a gRPC call collected
        only at interpreter exit can hang the process there.
        """
        self._call = None

    def cancel(self) -> None:
        """Stop the stream; the server drops the filters not yet computed.

        Iteration then ends quietly (no Cancelled error for a cancel asked for here).
        """
        self._cancelled = True
        self._stop()


class Visualization(_Stream):
    """The events of one VisualizeFilters stream; iterate it, or cancel it."""

    def __iter__(self) -> Iterator[Event]:
        finished = False
        try:
            for attempt in range(self._attempts):
                checker = EventChecker()
                try:
                    for response in self._begin():
                        yield checker.event(response)
                    checker.end()
                    finished = True
                    return
                except grpc.RpcError as raw:
                    error = from_rpc_error(raw)
                    if self._cancelled and isinstance(error, Cancelled):
                        finished = True
                        return
                    delay = self._retry_delay(error, attempt, checker.accepted is not None)
                    if delay is None:
                        if error is raw:
                            raise
                        raise error from raw
                    time.sleep(delay)
                    if self._cancelled:  # cancelled during the wait: no new call
                        finished = True
                        return
        finally:
            if not finished:
                self._stop()
            self._release()


class AsyncVisualization(_Stream):
    """The events of one VisualizeFilters stream, for asyncio."""

    async def __aiter__(self) -> AsyncIterator[Event]:
        finished = False
        try:
            for attempt in range(self._attempts):
                checker = EventChecker()
                try:
                    async for response in self._begin():
                        yield checker.event(response)
                    checker.end()
                    finished = True
                    return
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._cancelled and not (task and task.cancelling()):
                        finished = True  # our own cancel(), not the task's
                        return
                    raise
                except grpc.RpcError as raw:
                    error = from_rpc_error(raw)
                    if self._cancelled and isinstance(error, Cancelled):
                        finished = True
                        return
                    delay = self._retry_delay(error, attempt, checker.accepted is not None)
                    if delay is None:
                        if error is raw:
                            raise
                        raise error from raw
                    await asyncio.sleep(delay)
                    if self._cancelled:
                        finished = True
                        return
        finally:
            if not finished:
                self._stop()
            self._release()


StreamT = TypeVar("StreamT", bound=_Stream)


class _ClientBase(Generic[StreamT]):
    """What Client and AsyncClient share: channel, credentials, token, requests.

    `addresses`: see the module. `tls` reaches a TLS server (None: plaintext),
    `token` is sent as a bearer token, `attempts` bounds the tries of a call
    that finds no server (UNAVAILABLE; 1: no retry).
    """

    _grpc: Any  # grpc or grpc.aio
    _stream: type[StreamT]

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        tls: TLS | None = None,
        token: str | None = None,
        attempts: int = RETRY_POLICY["maxAttempts"],
    ) -> None:
        try:
            target = target_of(addresses)
        except ContractError as error:
            raise ValueError(str(error)) from error
        options = channel_options(attempts, tls, target.authority)
        if tls is None:
            self.channel = self._grpc.insecure_channel(target.target, options)
        else:
            self.channel = self._grpc.secure_channel(target.target, tls.credentials(), options)
        # The generated stub module has no type information.
        self.stub = pb_grpc.FilterVisualizerServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.attempts = attempts
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None

    def visualize(
        self,
        *,
        layer: str = "",
        filters: str | Sequence[int] | None = None,
        preset: str = "classic",
        model: str = "",
        size: int | None = None,
        steps: int | None = None,
        step_size: float | None = None,
        overrides: Mapping[str, Any] | None = None,
        seed: int | None = None,
        precision: str = "auto",
        image_format: str = "png",
        grid: bool = True,
        grid_n: int | None = None,
        grid_margin: int | None = None,
        keep_dead_filters: bool = False,
        timeout: float | None = None,
    ) -> StreamT:
        """Start a VisualizeFilters stream: iterate it for Accepted, FilterImages, Grid, Summary.

        layer, model: names as ListModels gives them ("": the preset's).
        filters: a spec ("0:64", "1,5,9", "0:8,100:104", "all") or a list of
            indices; None: the preset's default.
        preset: "classic", "upscale" or "keras_io" (any case).
        size, steps, step_size: image side in pixels, ascent steps per round,
            learning rate; None keeps the preset's. `overrides` sets any other
            field of the proto's Overrides (upscale_rounds, border, crop, ...).
        seed: reproduces a request (None: the server draws one, see Accepted.seed).
        precision: "auto", "float32" or "bfloat16". image_format: "png" or "raw".
        grid, grid_n, grid_margin: the stitched grid at the end; its side and margin.
        keep_dead_filters: deliver dead filters' pictures too.
        timeout: deadline of the whole stream, in seconds.

        Raises InvalidRequest at once for an argument the contract rejects;
        the stream raises the typed errors of filtercast_client.errors.
        """
        message = build_request(
            model=model,
            layer=layer,
            filters=filters,
            preset=preset,
            size=size,
            steps=steps,
            step_size=step_size,
            overrides=overrides,
            seed=seed,
            precision=precision,
            image_format=image_format,
            grid=grid,
            grid_n=grid_n,
            grid_margin=grid_margin,
            keep_dead_filters=keep_dead_filters,
        )
        return self._stream(
            lambda remaining: self.stub.VisualizeFilters(
                message, timeout=remaining, metadata=self.metadata
            ),
            timeout,
            self.attempts,
        )


class Client(_ClientBase[Visualization]):
    """A connection to one filtercast server, or several balanced round-robin."""

    _grpc = grpc
    _stream = Visualization

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def server_info(self, timeout: float | None = 30) -> ServerInfo:
        """The server's models, presets with their defaults, and limits."""
        response = self._unary(self.stub.ListModels, pb.ListModelsRequest(), timeout)
        return ServerInfo.from_message(response)

    def list_models(self, timeout: float | None = 30) -> list[ModelInfo]:
        """Every model the server has loaded."""
        return self.server_info(timeout).models

    def describe(self, model: str = "vgg16", timeout: float | None = 30) -> ModelInfo:
        """One model: weights, device, precision and layers (NotFound if not served)."""
        request = pb.DescribeModelRequest(model=model)
        return ModelInfo.from_message(self._unary(self.stub.DescribeModel, request, timeout).model)


class AsyncClient(_ClientBase[AsyncVisualization]):
    """The asyncio twin of Client (grpc.aio)."""

    _grpc = grpc.aio
    _stream = AsyncVisualization

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    async def server_info(self, timeout: float | None = 30) -> ServerInfo:
        """The server's models, presets with their defaults, and limits."""
        response = await self._unary(self.stub.ListModels, pb.ListModelsRequest(), timeout)
        return ServerInfo.from_message(response)

    async def list_models(self, timeout: float | None = 30) -> list[ModelInfo]:
        """Every model the server has loaded."""
        return (await self.server_info(timeout)).models

    async def describe(self, model: str = "vgg16", timeout: float | None = 30) -> ModelInfo:
        """One model: weights, device, precision and layers (NotFound if not served)."""
        request = pb.DescribeModelRequest(model=model)
        response = await self._unary(self.stub.DescribeModel, request, timeout)
        return ModelInfo.from_message(response.model)
