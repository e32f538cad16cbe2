"""The composition root: `filtercast serve` builds the server here and runs it.

Start-up order: the ports open (health NOT_SERVING, ListModels without
models, the other calls UNAVAILABLE while loading), then the engine starts in
a thread (device, models, warm-up); once it is built the scheduler and the
servicer are, the front hands calls to the servicer, and health turns
SERVING. SIGTERM (or SIGINT) turns health NOT_SERVING and refuses new
streams (UNAVAILABLE, which clients retry elsewhere) while the port stays
open; in-flight streams get the grace period, then the server stops and the
process exits 0. A bad setting or a port that cannot be bound: one line
naming the flag, exit 2. Models that cannot be served: their reason, exit 1.

Nothing imports this module but the command line (command.py).
"""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from filtercast.contract import SERVICE, is_loopback_host, join_host_port
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.cache.backends import cache_secret, open_backend
from filtercast_server.cache.indexes import IndexStore
from filtercast_server.cache.results import ResultCache
from filtercast_server.cache.secret import CacheSecretError
from filtercast_server.config import Settings, SettingsError
from filtercast_server.datasets import Dataset
from filtercast_server.engine.analysis import LayerMaps
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import memory_in_use
from filtercast_server.engine.loading import start_engine
from filtercast_server.errors import InvalidRequestError, ModelLoadError
from filtercast_server.model_registry import ModelConfig, RegistryError
from filtercast_server.observability.logs import configure_logging, throttle_loop_errors
from filtercast_server.observability.metrics import Metrics
from filtercast_server.observability.metrics_http import serve_metrics
from filtercast_server.serving.admission import NewStepBudget, StreamAdmission
from filtercast_server.serving.analysis import Analyses
from filtercast_server.serving.auth import AuthConfigError, TokenAuthenticator
from filtercast_server.serving.batching import SchedulerPolicy
from filtercast_server.serving.examples import DatasetExamples
from filtercast_server.serving.front import Front
from filtercast_server.serving.gateway.routes import Gateway, HttpPolicy, serve_gateway
from filtercast_server.serving.interceptor import ServerPolicy
from filtercast_server.serving.listeners import (
    PortError,
    add_grpc_port,
    connection_budget,
    ensure_free,
    server_options,
)
from filtercast_server.serving.reflection import enable_reflection
from filtercast_server.serving.scheduler import Scheduler
from filtercast_server.serving.servicer import FilterVisualizerServicer, ServingPolicy
from filtercast_server.serving.tls import TLSConfigError, http_tls_context
from filtercast_server.serving.wire import limits_message

log = logging.getLogger("filtercast_server")
T = TypeVar("T")

DRAIN_POLL_SECONDS = 0.1
SERVICE_NAMES = ("", SERVICE)  # health answers for the server and for the service


class CacheConfigError(ValueError):
    """An explicitly configured result cache cannot be opened (the server refuses to start)."""


# A start-up failure of these is the operator's to fix: one line, exit 2.
START_ERRORS = (
    SettingsError,
    RegistryError,
    AuthConfigError,
    TLSConfigError,
    CacheConfigError,
    PortError,
)


def run(settings: Settings) -> int:
    """Configure logging and serve; the process's exit code."""
    configure_logging(settings.log_level)
    return asyncio.run(serve(settings))


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    throttle_loop_errors(asyncio.get_running_loop(), log)
    stop = stop_on_signals()
    # Closed in reverse, whatever happens: the ports first, then the rest.
    async with AsyncExitStack() as parts, AsyncExitStack() as ports:
        try:
            settings = checked(settings)
            configs = settings.model_configs()
            authenticator = authenticator_of(settings)
            metrics = Metrics()
            await open_metrics_port(parts, settings, metrics)
            cache, index_store = open_cache(parts, settings, metrics)
            admission = StreamAdmission(
                settings.max_concurrent_streams, settings.client_max_streams
            )
            admissions = [admission]
            front = Front(metrics, server_limits(settings))
            health_servicer = await open_ports(
                ports, settings, front, metrics=metrics, cache=cache, authenticator=authenticator
            )
        except START_ERRORS as error:
            log.error("cannot start: %s", error)
            return 2
        engine, code = await load_engine(settings, configs, metrics, stop)
        if engine is not None:
            scheduler = Scheduler(
                engine, scheduler_policy(settings), observer=metrics, results=cache
            )
            scheduler.start()
            parts.push_async_callback(asyncio.to_thread, scheduler.stop)
            maps = LayerMaps(engine.models)
            examples = dataset_examples(settings, engine, maps, scheduler, index_store, metrics)
            if examples is not None:  # closed before the cache: its last stores land
                parts.push_async_callback(asyncio.to_thread, examples.close)
                admissions.append(examples.admission)
            servicer = FilterVisualizerServicer(
                engine.models,
                scheduler,
                serving_policy(settings),
                admission=admission,
                metrics=metrics,
                cache=cache,
                new_steps=NewStepBudget(settings.client_new_steps_per_minute),
                analyses=Analyses(engine.models, maps, settings.limits()),
                examples=examples,
            )
            front.open(servicer)
            await announce_serving(health_servicer, engine, metrics)
            await stop.wait()
        await drain(settings, front, admissions, health_servicer)
    log.info("stopped")
    return code


# --- the pieces, one factory each ----------------------------------------------------


def checked(settings: Settings) -> Settings:
    """The settings, checked (SettingsError) and with per-client limits capped (logged)."""
    settings.check()
    capped = settings.consistent()
    for field in ("client_queue_limit", "max_filters", "client_max_streams"):
        if getattr(capped, field) != getattr(settings, field):
            log.warning(
                "--%s lowered to %d to fit the global limits",
                field.replace("_", "-"),
                getattr(capped, field),
            )
    return capped


def authenticator_of(settings: Settings) -> TokenAuthenticator | None:
    """The bearer tokens of --auth-tokens-file (AuthConfigError); None when open."""
    if not settings.auth_tokens_file:
        return None
    return TokenAuthenticator.from_file(Path(settings.auth_tokens_file))


def open_cache(
    parts: AsyncExitStack, settings: Settings, metrics: Metrics
) -> tuple[ResultCache | None, IndexStore | None]:
    """The result cache `--cache` names, under its secret, and dataset indexes beside it.

    Both None when the cache is off.

    An explicit directory or URL that cannot be opened, or a missing or bad
    secret, stops the start; the default directory that cannot be created is
    logged and the server runs without a cache (a read-only home must not keep
    a replica down). It closes when `parts` does.
    """
    backend = None
    try:
        backend = open_backend(
            settings.cache, settings.cache_max_bytes, settings.cache_ttl_seconds or None
        )
        if backend is None:
            return None, None
        secret = cache_secret(backend, settings.cache_secret_file)
        cache = ResultCache(backend, secret, metrics)
        store = IndexStore(backend, secret, lambda what: metrics.cache_errors.labels(what).inc())
    except CacheSecretError as error:
        if backend is not None:
            backend.close()
        raise CacheConfigError(f"--cache-secret-file: {error}") from error
    except Exception as error:
        if backend is not None:
            backend.close()
        if settings.cache != "auto":
            raise CacheConfigError(f"--cache {settings.cache}: {error}") from error
        log.warning("result cache off: the default directory cannot be used (%s)", error)
        metrics.cache_errors.labels("open").inc()
        return None, None
    parts.push_async_callback(asyncio.to_thread, cache.close)
    return cache, store


def dataset_examples(
    settings: Settings,
    engine: AscentEngine,
    maps: LayerMaps,
    scheduler: Scheduler,
    store: IndexStore | None,
    metrics: Metrics,
) -> DatasetExamples | None:
    """DatasetExamples over every model's registered folders (None when none has one)."""
    datasets = {
        name: {
            dataset: Dataset(dataset, folder, settings.dataset_max_images)
            for dataset, folder in model.config.datasets
        }
        for name, model in engine.models.items()
    }
    if not any(datasets.values()):
        return None
    return DatasetExamples(engine.models, datasets, maps, scheduler, store, metrics)


def server_limits(settings: Settings) -> pb.ServerLimits:
    """Every limit of this server, as ListModels tells clients."""
    return limits_message(
        settings.limits(),
        queue_limit=settings.queue_limit,
        client_queue_limit=settings.client_queue_limit,
        max_concurrent_streams=settings.max_concurrent_streams,
        client_max_streams=settings.client_max_streams,
        client_new_steps_per_minute=settings.client_new_steps_per_minute,
        max_stream_seconds=settings.max_stream_seconds,
        stall_seconds=settings.stall_seconds,
    )


def serving_policy(settings: Settings) -> ServingPolicy:
    """What the servicer allows a request and its stream."""
    return ServingPolicy(
        limits=settings.limits(),
        server_limits=server_limits(settings),
        stall_seconds=settings.stall_seconds,
        max_stream_seconds=settings.max_stream_seconds,
    )


def scheduler_policy(settings: Settings) -> SchedulerPolicy:
    """How much may queue, and how requests share the device."""
    return SchedulerPolicy(
        queue_limit=settings.queue_limit,
        client_queue_limit=settings.client_queue_limit,
        stream_buffer=settings.stream_buffer,
        max_cohorts=settings.max_cohorts,
    )


def http_policy(settings: Settings, max_connections: int) -> HttpPolicy:
    """What one HTTP client may hold, and how long it may take."""
    return HttpPolicy(
        max_connections=max_connections,
        read_seconds=settings.http_read_seconds,
        handshake_seconds=settings.handshake_timeout_seconds,
        stall_seconds=settings.stall_seconds,
        loopback=is_loopback_host(settings.host),
    )


async def listen(field: str, settings: Settings, start: Callable[[], Awaitable[T]]) -> T:
    """`start()` listening on the port of setting `field`; PortError when it cannot."""
    port = getattr(settings, field)
    ensure_free(field, settings.host, port)
    try:
        return await start()
    except OSError as error:
        raise PortError(field, settings.host, port, error.strerror or str(error)) from error


async def open_metrics_port(parts: AsyncExitStack, settings: Settings, metrics: Metrics) -> None:
    """Serve /metrics on --metrics-port (unless 0) until `parts` closes."""
    if not settings.metrics_port:
        return
    runner = await listen(
        "metrics_port",
        settings,
        lambda: serve_metrics(metrics.registry, settings.host, settings.metrics_port),
    )
    parts.push_async_callback(runner.cleanup)


async def open_ports(
    ports: AsyncExitStack,
    settings: Settings,
    front: Front,
    *,
    metrics: Metrics,
    cache: ResultCache | None,
    authenticator: TokenAuthenticator | None,
) -> Any:
    """Listen for gRPC (and HTTP) calls; health says NOT_SERVING. They close with `ports`.

    Returns the health servicer, whose status serve() changes.
    """
    http_wanted = settings.http_max_connections if settings.http_port else 0
    grpc_connections, http_connections = connection_budget(settings.max_connections, http_wanted)
    options = server_options(settings, grpc_connections)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    for service in SERVICE_NAMES:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    server = grpc.aio.server(interceptors=[ServerPolicy(metrics, authenticator)], options=options)
    server.add_generic_rpc_handlers((front.rpc_handler(),))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, (SERVICE, health.SERVICE_NAME))
    port = add_grpc_port(server, "port", settings)
    servers = [server]
    if settings.health_port:
        probes = grpc.aio.server(interceptors=[ServerPolicy(metrics)], options=options)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probes)
        add_grpc_port(probes, "health_port", settings, tls=False)
        servers.append(probes)
    if settings.http_port:
        await open_gateway(
            ports,
            settings,
            Gateway(
                front,
                http_policy(settings, http_connections),
                metrics=metrics,
                cache=cache,
                authenticator=authenticator,
            ),
        )
    for each in servers:
        await each.start()
        ports.push_async_callback(each.stop, 1.0)
    log.info(
        "listening on %s (%s%s; health %s; metrics %s; http %s; cache %s)",
        join_host_port(settings.host, port),
        "TLS" if settings.tls_cert else "plaintext",
        ", mTLS" if settings.tls_client_ca else "",
        settings.health_port or "on the main port",
        settings.metrics_port or "off",
        settings.http_port or "off",
        cache.description if cache else "off",
    )
    return health_servicer


async def open_gateway(ports: AsyncExitStack, settings: Settings, gateway: Gateway) -> None:
    """Serve the HTTP gateway on --http-port (TLS as the gRPC port) until `ports` closes."""
    tls = None
    if settings.tls_cert:
        tls = http_tls_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    listener = await listen(
        "http_port",
        settings,
        lambda: serve_gateway(gateway, settings.host, settings.http_port, tls),
    )
    ports.push_async_callback(listener.close)


# --- running -------------------------------------------------------------------------


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def load_engine(
    settings: Settings, configs: list[ModelConfig], metrics: Metrics, stop: asyncio.Event
) -> tuple[AscentEngine | None, int]:
    """The engine, started in a thread, and exit code 0; (None, 1) when it fails, logged.

    (None, 0) when a signal comes first: the process stops without waiting.
    """
    loading = asyncio.ensure_future(asyncio.to_thread(start_engine, settings, configs, metrics))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not loading.done():
        return None, 0
    try:
        return loading.result(), 0
    except (ModelLoadError, InvalidRequestError) as error:  # the model's fault: its reason
        log.error("cannot start: %s", error)
    except Exception:
        log.exception("could not load the models")
    return None, 1


async def announce_serving(health_servicer: Any, engine: AscentEngine, metrics: Metrics) -> None:
    """Health SERVING, the models in the log, the device memory they hold."""
    for service in SERVICE_NAMES:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s", ", ".join(engine.models))
    for device in {model.device.name: model.device for model in engine.models.values()}.values():
        metrics.on_device_memory(device.name, memory_in_use(device))


async def drain(
    settings: Settings, front: Front, admissions: list[StreamAdmission], health_servicer: Any
) -> None:
    """Refuse new streams, health NOT_SERVING; in-flight ones (of every kind) get the grace."""
    log.info("draining: in-flight streams have %.0f s to finish", settings.grace_seconds)
    front.draining = True
    await health_servicer.enter_graceful_shutdown()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.grace_seconds
    while (open_streams := sum(a.open for a in admissions)) and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    if open_streams:
        log.warning("grace period over: ending %d streams", open_streams)
