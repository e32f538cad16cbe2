"""Prometheus metrics, served on their own HTTP port.

Base units, `_total` counters, low-cardinality labels (model, layer, preset,
outcome, method, code; never a request id or a filter index). Buckets are
fitted to the latencies measured on CPU (seconds per step, minutes per
request) and on GPU (milliseconds per step).
"""

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)

from filtercast_server.jobs import EngineObserver, Precision
from filtercast_server.params import AscentParams

REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640, 1280)
FILTER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)
NATIVE_BUCKETS = (1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics(EngineObserver):
    """Every series the service exports, in one registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)  # resident memory, CPU seconds, open fds
        self._declare_requests(self.registry)
        self._declare_engine(self.registry)
        self._declare_grpc(self.registry)
        self._declare_cache(self.registry)
        self._declare_http(self.registry)
        self._declare_indexes(self.registry)

    def _declare_requests(self, r: CollectorRegistry) -> None:
        """Streams, filters and refusals."""
        self.request_duration = Histogram(
            "filtercast_request_duration_seconds",
            "VisualizeFilters duration from accept to summary (or failure)",
            ["model", "layer", "preset", "outcome"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.time_to_first_filter = Histogram(
            "filtercast_time_to_first_filter_seconds",
            "From accept to the first FilterResult sent",
            ["model", "layer", "preset"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.filter_queue_wait = Histogram(
            "filtercast_filter_queue_wait_seconds",
            "Time a filter waited for a batch row",
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.filter_compute = Histogram(
            "filtercast_filter_compute_seconds",
            "Time a filter spent in a batch",
            buckets=FILTER_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "filtercast_requests_in_flight", "VisualizeFilters streams open", registry=r
        )
        self.queued = Gauge(
            "filtercast_queued_filters", "Filters waiting for a batch row", registry=r
        )
        self.filters = Counter(
            "filtercast_filters_total",
            "Filters by outcome: ok, dead, cancelled, error",
            ["outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "filtercast_rejected_total",
            "Requests refused or ended by a limit, by reason (malformed, invalid, over_budget, "
            "streams, client_streams, queue, client_queue, not_ready, draining, "
            "unauthenticated, permission_denied, stalled, lifetime, http_connections: over the "
            "HTTP connection cap, http_slow_body: a body slower than --http-read-seconds)",
            ["reason"],
            registry=r,
        )
        for outcome in ("ok", "dead", "cancelled", "error"):
            self.filters.labels(outcome)

    def _declare_engine(self, r: CollectorRegistry) -> None:
        """The device: steps, batches, native kernels, memory."""
        self.step_duration = Histogram(
            "filtercast_ascent_step_seconds",
            "One compiled ascent step for a whole batch",
            ["model", "layer", "precision"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "filtercast_batch_size",
            "Rows in one ascent step",
            ["model", "layer"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.deprocess_duration = Histogram(
            "filtercast_native_deprocess_seconds",
            "Native deprocess of the pictures finished by one step",
            buckets=NATIVE_BUCKETS,
            registry=r,
        )
        self.stitch_duration = Histogram(
            "filtercast_native_stitch_seconds",
            "Native stitch of one grid",
            buckets=NATIVE_BUCKETS,
            registry=r,
        )
        self.restarts = Counter(
            "filtercast_filter_restarts_total",
            "Restarts from fresh noise of filters dead at their first step (revive)",
            ["model", "layer"],
            registry=r,
        )
        self.model_memory = Gauge(
            "filtercast_model_memory_bytes",
            "Bytes of a resident model's weights (every precision variant built)",
            ["model"],
            registry=r,
        )
        self.device_memory = Gauge(
            "filtercast_device_memory_bytes",
            "Accelerator memory in use, where the device reports it",
            ["device"],
            registry=r,
        )

    def _declare_grpc(self, r: CollectorRegistry) -> None:
        """The standard gRPC server metrics, as go-grpc-middleware's names and labels.

        (grpc-ecosystem/go-grpc-prometheus), so shared dashboards and alerts work.
        """
        rpc_labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.rpc_started = Counter(
            "grpc_server_started_total", "RPCs started on the server", rpc_labels, registry=r
        )
        self.rpc_handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status code",
            [*rpc_labels, "grpc_code"],
            registry=r,
        )
        self.rpc_handling = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server (until the last message)",
            rpc_labels,
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.rpc_received = Counter(
            "grpc_server_msg_received_total",
            "Messages received from clients",
            rpc_labels,
            registry=r,
        )
        self.rpc_sent = Counter(
            "grpc_server_msg_sent_total", "Messages sent to clients", rpc_labels, registry=r
        )

    def _declare_cache(self, r: CollectorRegistry) -> None:
        """The result cache."""
        self.cache_hits = Counter(
            "filtercast_cache_hits_total", "Filters served from the result cache", registry=r
        )
        self.cache_misses = Counter(
            "filtercast_cache_misses_total",
            "Filters looked up in the result cache and not found (then computed)",
            registry=r,
        )
        self.cache_errors = Counter(
            "filtercast_cache_errors_total",
            "Result cache faults, by operation (open, lookup, store, forged: an entry whose "
            "tag fails, corrupt: one whose fields fail, delete, volume; index_lookup, "
            "index_store, index_corrupt: a dataset index's): each is logged and the filter "
            "computed or the index built",
            ["operation"],
            registry=r,
        )
        self.cache_bytes = Gauge(
            "filtercast_cache_bytes",
            "Bytes the result cache holds (a Redis backend: the Redis server's used memory)",
            registry=r,
        )
        self.cache_shared = Counter(
            "filtercast_cache_shared_total",
            "Filters a request got from another request's computation in flight (de-duplicated)",
            registry=r,
        )
        self.cache_evictions = Counter(
            "filtercast_cache_evictions_total",
            "Cached filters dropped early, by reason (free_space: the directory's filesystem "
            "was short of its reserve)",
            ["reason"],
            registry=r,
        )
        for operation in (
            "open",
            "lookup",
            "store",
            "forged",
            "corrupt",
            "delete",
            "index_lookup",
            "index_store",
            "index_corrupt",
        ):
            self.cache_errors.labels(operation)
        self.cache_evictions.labels("free_space")

    def _declare_http(self, r: CollectorRegistry) -> None:
        """The HTTP gateway."""
        self.http_connections = Gauge(
            "filtercast_http_connections",
            "Connections open on the HTTP gateway",
            registry=r,
        )
        self.http_requests = Counter(
            "filtercast_http_requests_total",
            "HTTP gateway requests by route and status code",
            ["route", "code"],
            registry=r,
        )
        self.http_duration = Histogram(
            "filtercast_http_request_seconds",
            "HTTP gateway request duration, until the last byte of a stream",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )

    def _declare_indexes(self, r: CollectorRegistry) -> None:
        """Dataset indexes (DatasetExamples)."""
        self.index_images = Counter(
            "filtercast_index_images_total",
            "Dataset images an index build read, by outcome (ranked; skipped: over a bound, "
            "unreadable, undecodable or changed)",
            ["outcome"],
            registry=r,
        )
        self.index_builds = Counter(
            "filtercast_index_builds_total",
            "Dataset indexes a request needed, by how it got them (memory, store: built "
            "earlier; built; failed)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ranked", "skipped"):
            self.index_images.labels(outcome)
        for outcome in ("memory", "store", "built", "failed"):
            self.index_builds.labels(outcome)

    def on_step(
        self, params: AscentParams, precision: Precision, rows: int, seconds: float
    ) -> None:
        """Record one ascent step."""
        self.step_duration.labels(params.model, params.layer, precision.value).observe(seconds)
        self.batch_size.labels(params.model, params.layer).observe(rows)

    def on_deprocess(self, images: int, seconds: float) -> None:
        """Record one native deprocess call."""
        self.deprocess_duration.observe(seconds)

    def on_restart(self, params: AscentParams) -> None:
        """Count one revive restart."""
        self.restarts.labels(params.model, params.layer).inc()

    def on_model(self, name: str, parameter_bytes: int) -> None:
        """Record a resident model's weights."""
        self.model_memory.labels(name).set(parameter_bytes)

    def on_filters(self, outcome: str, count: int) -> None:
        """Count jobs that ended (the scheduler reports each once)."""
        self.filters.labels(outcome).inc(count)

    def on_queue_depth(self, queued: int) -> None:
        """Record the jobs waiting for a batch row."""
        self.queued.set(queued)

    def on_shared(self, count: int) -> None:
        """Count filters a request took from another request's job in flight."""
        self.cache_shared.inc(count)

    def on_device_memory(self, device_name: str, used: int | None) -> None:
        """Record the accelerator memory in use (None, a CPU's: the gauge stays absent)."""
        if used is not None:
            self.device_memory.labels(device_name).set(used)
