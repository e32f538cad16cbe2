"""Run the gRPC service (`filtercast serve`, `python -m filtercast_server`; see command.py).

Start-up order: metrics port, gRPC port(s) with health NOT_SERVING, then
models load and warm up in the background; health turns SERVING when they are
ready. SIGTERM (or SIGINT) turns health NOT_SERVING and refuses new streams
(UNAVAILABLE, which clients retry elsewhere) while the port stays open: probes
see NOT_SERVING, not a refused connection. In-flight streams get the grace
period to finish, then the server stops and the process exits 0.
"""

import asyncio
import logging
import resource
import signal
import ssl
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pythonjsonlogger.json import JsonFormatter

from filtercast.contract import (
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    SERVER_MIN_PING_INTERVAL_MS,
    SERVICE,
    join_host_port,
)
from filtercast_server.admission import StreamAdmission
from filtercast_server.api import FilterVisualizerServicer
from filtercast_server.ascent import AscentEngine
from filtercast_server.auth import AuthConfigError, TokenAuthenticator
from filtercast_server.cache.backends import cache_secret, open_backend
from filtercast_server.cache.results import ResultCache
from filtercast_server.cache.secret import CacheSecretError
from filtercast_server.config import Settings, SettingsError
from filtercast_server.devices import select_device
from filtercast_server.errors import InvalidRequestError, ModelLoadError
from filtercast_server.gateway import Gateway, HttpLimits, serve_gateway, tls_context
from filtercast_server.interceptor import ServerPolicy
from filtercast_server.metrics import Metrics
from filtercast_server.metrics_http import serve_metrics
from filtercast_server.models import LoadedModel
from filtercast_server.planning import make_plan
from filtercast_server.reflection import enable_reflection
from filtercast_server.registry import ModelConfig, RegistryError
from filtercast_server.scheduler import Scheduler
from filtercast_server.throttle import throttle_loop_errors
from filtercast_server.tls import ReloadingCredentials, TLSConfigError
from filtercast_server.wire import limits_message

log = logging.getLogger("filtercast_server")

FD_RESERVE = 128  # open files kept back from --max-connections: models, logs, metrics sockets
DRAIN_POLL_SECONDS = 0.1


def configure_logging(level: str) -> None:
    """JSON lines on stderr; request-scoped records carry request_id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


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


def load_models(
    settings: Settings, configs: list[ModelConfig], engine: AscentEngine, metrics: Metrics
) -> dict[str, LoadedModel]:
    """Load every configured model, check they fit, trace each default layer's step once.

    Any failure raises: the server never serves some of its models.
    """
    device = select_device(settings.device)
    rows, pixels = device.batch_limits()
    engine.max_batch = settings.max_batch or rows
    engine.max_batch_pixels = settings.max_batch_pixels or pixels
    log.info(
        "batches of at most %d filters and %d pixels", engine.max_batch, engine.max_batch_pixels
    )
    builtins = [c.name for c in configs if c.builtin]
    if len(builtins) > 1 and settings.weights not in ("imagenet", "random"):
        raise ModelLoadError("a weights file fits one built-in model; serve one, or imagenet")
    models = {}
    for config in configs:
        source = config.path.name if config.path else settings.weights
        log.info("loading %s (%s) on %s", config.name, source, device.description)
        model = LoadedModel(config.name, settings.weights, device, settings.seed, config)
        models[config.name] = model
        metrics.model_memory.labels(config.name).set(model.parameter_bytes())
    check_memory(models, engine.max_batch_pixels, device.kind)
    engine.models.update(models)
    for name, model in models.items():
        size = model.input_size or max(32, model.smallest_input(model.default_layer))
        warm = make_plan(
            models,
            "classic",
            {"model": name, "layer": model.default_layer, "size": size, "steps": 1},
            "0:1",
            "auto",
            seed=0,
            limits=settings.limits(),
            default_precision=settings.precision,
        )
        list(engine.run(warm))
        log.info(
            "%s ready: %d layers, input %s x %d channels, %s preprocessing, sha256 %s",
            name,
            len(model.layers),
            model.input_size or "any size",
            model.channels,
            model.preprocessing.describe(),
            model.weights_sha256[:16] or "-",
        )
    return models


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes the kernel says can be allocated without swapping (None when unknown)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(models: dict[str, LoadedModel], batch_pixels: int, device: str) -> None:
    """Refuse to start when the models' estimated need exceeds the memory left on a CPU host.

    The estimate: every model's weights (resident), plus one batch of the
    largest model's activations (models take turns on the device). GPU memory
    is not checked here: TensorFlow reports no free figure before it allocates.
    """
    weights = sum(model.parameter_bytes() for model in models.values())
    activations = max(model.activation_bytes(batch_pixels) for model in models.values())
    log.info(
        "memory estimate: %.0f MB of weights, %.0f MB of activations per batch",
        weights / 1e6,
        activations / 1e6,
    )
    free = available_memory() if device == "cpu" else None
    if free is not None and activations > free:
        raise ModelLoadError(
            f"the models need about {(weights + activations) / 1e9:.1f} GB ({weights / 1e9:.1f} "
            f"GB of weights, loaded, plus {activations / 1e9:.1f} GB of activations for a batch "
            f"of {batch_pixels} pixels) and {free / 1e9:.1f} GB is left: serve fewer models or "
            "lower --max-batch-pixels"
        )


def add_port(server: grpc.aio.Server, address: str, settings: Settings) -> int:
    """Listen on `address`, with TLS when a certificate is configured."""
    if not settings.tls_cert:
        return server.add_insecure_port(address)
    credentials = ReloadingCredentials(
        Path(settings.tls_cert),
        Path(settings.tls_key),
        Path(settings.tls_client_ca) if settings.tls_client_ca else None,
    )
    return server.add_secure_port(address, credentials.credentials())


class CacheConfigError(ValueError):
    """An explicitly configured result cache cannot be opened (the server refuses to start)."""


def open_cache(settings: Settings, metrics: Metrics) -> ResultCache | None:
    """The result cache `--cache` names, under its secret; None when off.

    An explicit directory or URL that cannot be opened, or a missing or bad
    secret, stops the start; the default directory that cannot be created is
    logged and the server runs without a cache (a read-only home must not keep
    a replica down).
    """
    backend = None
    try:
        backend = open_backend(
            settings.cache, settings.cache_max_bytes, settings.cache_ttl_seconds or None
        )
        if backend is None:
            return None
        return ResultCache(backend, cache_secret(backend, settings.cache_secret_file), metrics)
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
        return None


async def drain(servicer: FilterVisualizerServicer, grace: float) -> None:
    """Wait for in-flight streams to finish, at most `grace` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while servicer.admission.open and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    if servicer.admission.open:
        log.warning("grace period over: ending %d streams", servicer.admission.open)


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    throttle_loop_errors(asyncio.get_running_loop(), log)
    cache: ResultCache | None = None
    try:
        settings.check()
        capped = settings.consistent()
        for field in ("client_queue_limit", "max_filters", "client_max_streams"):
            if getattr(capped, field) != getattr(settings, field):
                log.warning(
                    "--%s lowered to %d to fit the global limits",
                    field.replace("_", "-"),
                    getattr(capped, field),
                )
        settings = capped
        configs = settings.model_configs()
        authenticator = (
            TokenAuthenticator.from_file(Path(settings.auth_tokens_file))
            if settings.auth_tokens_file
            else None
        )
        max_connections, http_connections = connection_budget(
            settings.max_connections, settings.http_max_connections if settings.http_port else 0
        )
        metrics = Metrics()
        cache = open_cache(settings, metrics)
        # Batch limits are set once the device is known (load_models).
        engine = AscentEngine({}, observer=metrics)
        scheduler = Scheduler(
            engine,
            settings.queue_limit,
            settings.client_queue_limit,
            settings.stream_buffer,
            settings.max_cohorts,
            on_filters=lambda outcome, n: metrics.filters.labels(outcome).inc(n),
            on_queue_depth=metrics.queued.set,
            on_result=cache.store if cache else None,
            on_shared=metrics.cache_shared.inc,
        )
        servicer = FilterVisualizerServicer(
            engine.models,
            scheduler,
            metrics,
            settings.limits(),
            StreamAdmission(settings.max_concurrent_streams, settings.client_max_streams),
            server_limits=limits_message(
                settings.limits(),
                queue_limit=settings.queue_limit,
                client_queue_limit=settings.client_queue_limit,
                max_concurrent_streams=settings.max_concurrent_streams,
                client_max_streams=settings.client_max_streams,
                max_stream_seconds=settings.max_stream_seconds,
                stall_seconds=settings.stall_seconds,
            ),
            max_message_bytes=MAX_MESSAGE_BYTES,
            default_precision=settings.precision,
            stall_seconds=settings.stall_seconds,
            max_stream_seconds=settings.max_stream_seconds,
            cache=cache,
        )
        policy = ServerPolicy(metrics, authenticator)
        options = server_options(settings, max_connections)
        server = grpc.aio.server(interceptors=[policy], options=options)
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        server.add_generic_rpc_handlers((servicer.rpc_handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        enable_reflection(server, (SERVICE, health.SERVICE_NAME))
        port = add_port(server, join_host_port(settings.host, settings.port), settings)
        servers = [server]
        if settings.health_port:
            probes = grpc.aio.server(interceptors=[ServerPolicy(metrics)], options=options)
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probes)
            probes.add_insecure_port(join_host_port(settings.host, settings.health_port))
            servers.append(probes)
        gateway_tls = None
        if settings.tls_cert and settings.http_port:
            try:
                gateway_tls = tls_context(
                    settings.tls_cert, settings.tls_key, settings.tls_client_ca
                )
            except (ssl.SSLError, OSError) as error:
                raise TLSConfigError(f"the HTTP gateway's TLS files: {error}") from error
    except (
        SettingsError,
        RegistryError,
        AuthConfigError,
        TLSConfigError,
        CacheConfigError,
    ) as error:
        log.error("cannot start: %s", error)
        if cache is not None:
            cache.close()
        return 2
    metrics_runner = gateway_listener = None
    if settings.metrics_port:
        metrics_runner = await serve_metrics(metrics.registry, settings.host, settings.metrics_port)
    if settings.http_port:
        loopback = settings.host.strip("[]") in ("127.0.0.1", "::1", "localhost")
        limits = HttpLimits(
            max_connections=http_connections,
            read_seconds=settings.http_read_seconds,
            handshake_seconds=settings.handshake_timeout_seconds,
        )
        gateway = Gateway(servicer, metrics, authenticator, loopback=loopback, limits=limits)
        gateway_listener = await serve_gateway(
            gateway, settings.host, settings.http_port, gateway_tls
        )
    for service in ("", SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    for each in servers:
        await each.start()
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

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading = asyncio.ensure_future(
        asyncio.to_thread(load_models, settings, configs, engine, metrics)
    )
    await asyncio.wait(
        [loading, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    code = 0
    if loading.done():
        try:
            loading.result()
            scheduler.start()
            servicer.ready = True
            for service in ("", SERVICE):
                await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
            log.info("serving %s", ", ".join(engine.models))
            for model in engine.models.values():
                metrics.sample_device_memory(model.device.name)
        except (ModelLoadError, InvalidRequestError) as error:  # the model's fault: its reason
            log.error("cannot start: %s", error)
            code = 1
            stop.set()
        except Exception:
            log.exception("could not load the models")
            code = 1
            stop.set()
    await stop.wait()
    log.info("draining: in-flight streams have %.0f s to finish", settings.grace_seconds)
    servicer.draining = True
    await health_servicer.enter_graceful_shutdown()
    await drain(servicer, settings.grace_seconds)
    for each in servers:
        await each.stop(1.0)
    if gateway_listener is not None:
        await gateway_listener.close()
    scheduler.stop()
    if cache is not None:
        await asyncio.to_thread(cache.close)
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    log.info("stopped")
    return code


def run(settings: Settings) -> int:
    """Configure logging and serve; the process's exit code."""
    configure_logging(settings.log_level)
    return asyncio.run(serve(settings))
