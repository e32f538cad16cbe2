"""`filtercast serve` / `python -m filtercast_server`: run the gRPC service.

Start-up order: metrics port, gRPC port with health NOT_SERVING, then models
load and warm up in the background; health turns SERVING when they are
ready. SIGTERM (or SIGINT) turns health NOT_SERVING, stops accepting new
RPCs, lets in-flight streams finish within the grace period and exits 0.
"""

import asyncio
import logging
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pythonjsonlogger.json import JsonFormatter

from filtercast.v1 import filtercast_pb2 as pb
from filtercast.v1 import filtercast_pb2_grpc as pb_grpc
from filtercast_server.api import FilterVisualizerServicer
from filtercast_server.ascent import AscentEngine
from filtercast_server.config import MAX_MESSAGE_BYTES, Settings, parse_settings
from filtercast_server.devices import select_device
from filtercast_server.errors import ModelLoadError
from filtercast_server.metrics import Metrics
from filtercast_server.models import LoadedModel
from filtercast_server.planning import make_plan
from filtercast_server.scheduler import Scheduler

SERVICE = pb.DESCRIPTOR.services_by_name["FilterVisualizerService"].full_name
log = logging.getLogger("filtercast_server")

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Accept the client library's keepalive pings (every 30 s, also while idle).
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
]


def configure_logging(level: str) -> None:
    """JSON lines on stderr; request-scoped records carry request_id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def load_models(settings: Settings, engine: AscentEngine) -> dict[str, LoadedModel]:
    """Load every configured model and trace its default layer's step once."""
    device = select_device(settings.device)
    rows, pixels = device.batch_limits()
    engine.max_batch = settings.max_batch or rows
    engine.max_batch_pixels = settings.max_batch_pixels or pixels
    log.info(
        "batches of at most %d filters and %d pixels", engine.max_batch, engine.max_batch_pixels
    )
    names = settings.model_names
    if len(names) > 1 and settings.weights not in ("imagenet", "random"):
        raise ModelLoadError("a weights file fits one model; pass one --models or imagenet")
    models = {}
    for name in names:
        log.info("loading %s (%s) on %s", name, settings.weights, device.description)
        models[name] = LoadedModel(name, settings.weights, device, seed=settings.seed)
    engine.models.update(models)
    for name, model in models.items():
        warm = make_plan(
            models,
            "classic",
            {"model": name, "layer": model.spec.default_layer, "size": 32, "steps": 1},
            "0:1",
            settings.precision,
            seed=0,
        )
        list(engine.run(warm))
    return models


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    metrics = Metrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, settings.host)
    # Batch limits are set once the device is known (load_models).
    engine = AscentEngine({}, observer=metrics)
    scheduler = Scheduler(
        engine,
        settings.queue_limit,
        on_filters=lambda outcome, n: metrics.filters.labels(outcome).inc(n),
        on_queue_depth=metrics.queued.set,
    )
    servicer = FilterVisualizerServicer(
        engine.models, scheduler, metrics, settings.limits(), MAX_MESSAGE_BYTES, settings.precision
    )
    server = grpc.aio.server(
        options=CHANNEL_OPTIONS, maximum_concurrent_rpcs=settings.max_concurrent_streams
    )
    health_servicer = health.aio.HealthServicer()
    pb_grpc.add_FilterVisualizerServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    for service in ("", SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    address = f"{settings.host}:{settings.port}"
    port = server.add_insecure_port(address)
    await server.start()
    log.info("listening on %s:%d (metrics on %d)", settings.host, port, settings.metrics_port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading = asyncio.ensure_future(asyncio.to_thread(load_models, settings, engine))
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
            log.info("serving %s", ", ".join(settings.model_names))
            for model in engine.models.values():
                metrics.sample_device_memory(model.device.name)
        except Exception:
            log.exception("could not load the models")
            code = 1
            stop.set()
    await stop.wait()
    log.info("draining: in-flight streams have %.0f s to finish", settings.grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_seconds)
    scheduler.stop()
    log.info("stopped")
    return code


def main(argv: list[str] | None = None) -> None:
    """Parse settings, serve, exit with the server's code."""
    settings = parse_settings(argv)
    configure_logging(settings.log_level)
    sys.exit(asyncio.run(serve(settings)))
