"""The real servicer, scheduler and interceptor in-process, on a stand-in engine: no TensorFlow.

    with StandIn() as server:
        with Client(server.address) as client: ...

The stand-in model "vgg16" has one layer, block5_conv1, of 64 filters; the
stand-in engine "computes" a filter in `steps` steps of `step_seconds` each
and counts what it finished, so tests can see the server's work stop.
Filter i is dead when i % 7 == 3; its picture is a flat image of value i.
AnalyzeImage is real but for the forward pass (`standin_maps`); so are
DatasetExamples (`datasets=`), on `IndexMaps`.
"""

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from filtercast_server.cache.backends import Backend
from filtercast_server.cache.indexes import IndexStore
from filtercast_server.cache.results import ResultCache
from filtercast_server.datasets import Dataset
from filtercast_server.examples import ReceptiveField
from filtercast_server.jobs import FilterOutcome, FilterPreview, JobSource, Precision
from filtercast_server.model_registry import ModelConfig
from filtercast_server.objectives import Structure
from filtercast_server.observability.metrics import Metrics
from filtercast_server.params import AscentParams, Limits
from filtercast_server.serving.admission import NewStepBudget, StreamAdmission
from filtercast_server.serving.analysis import Analyses
from filtercast_server.serving.auth import TokenAuthenticator
from filtercast_server.serving.batching import SchedulerPolicy
from filtercast_server.serving.examples import DatasetExamples
from filtercast_server.serving.front import Front
from filtercast_server.serving.gateway.routes import Gateway, HttpPolicy, serve_gateway
from filtercast_server.serving.interceptor import ServerPolicy
from filtercast_server.serving.reflection import enable_reflection
from filtercast_server.serving.scheduler import Scheduler
from filtercast_server.serving.servicer import FilterVisualizerServicer, ServingPolicy
from filtercast_server.serving.wire import limits_message

CHANNELS = 64
SECRET = b"a stand-in secret of 32 bytes!!!"  # entries are authenticated under it


@dataclass(frozen=True)
class Layer:
    name: str
    type: str
    channels: int
    stride: int
    dtype: str


class Device:
    name = "/CPU:0"
    description = "stand-in device"

    def resolve(self, precision: Precision | str) -> Precision:
        chosen = Precision(precision)
        return Precision.FLOAT32 if chosen is Precision.AUTO else chosen


class Model:
    """What planning and the API ask of a loaded model."""

    def __init__(self, name: str = "vgg16", datasets: tuple = ()) -> None:
        self.name = name
        self.weights_source = "random"
        self.weights_sha256 = ""
        self.cache_identity = f"standin:{name}"
        self.device = Device()
        self.config = ModelConfig(name, datasets=datasets)
        self.preprocessing = self.config.preprocessing
        self.training_preprocessing = self.config.preprocessing
        self.default_layer = "block5_conv1"
        self.default_preset = "classic"
        self.input_size = None
        self.channels = 3
        self.precisions = (Precision.FLOAT32, Precision.BFLOAT16)
        self.layers = [Layer("block5_conv1", "Conv2D", CHANNELS, 16, "float32")]
        self.dense_layers: list = []

    def resolve_precision(self, precision: Precision | str) -> Precision:
        return self.device.resolve(precision)

    def layer(self, name: str) -> Layer:
        from filtercast_server.errors import InvalidRequestError

        for layer in self.layers:
            if layer.name == name:
                return layer
        raise InvalidRequestError(f"layer {name!r} not found in {self.name}", "layer")

    def dense_layer(self, name: str) -> None:
        return None

    def smallest_input(self, layer: str, border: int = 0) -> int:
        return 16

    def check_objective(self, layer: str, objective: str) -> None:
        """Its one layer is not nested: every objective works."""

    def output_size(self, layer: str, size: int) -> tuple[int, int]:
        return (size // 16, size // 16)


@dataclass
class Engine:
    """Counts the filters it finished; each takes params.steps steps of step_seconds."""

    step_seconds: float = 0.005
    max_batch: int = 4
    finished: list[int] = field(default_factory=list)
    steps: set[tuple] = field(default_factory=set)  # "compiled": the work it has run

    def batch_size(self, params: AscentParams) -> int:
        return self.max_batch

    def compiled(self, params: AscentParams, precision: Precision, structure: Structure) -> bool:
        return (params.model, params.parameterization, precision, structure) in self.steps

    def run_jobs(
        self, params: AscentParams, precision: Precision, structure: Structure, source: JobSource
    ) -> Iterator:
        self.steps.add((params.model, params.parameterization, precision, structure))
        rows: list[list[Any]] = []  # [job, steps done]
        while True:
            rows.extend([job, 0] for job in source(self.max_batch - len(rows)))
            if not rows:
                return
            time.sleep(self.step_seconds)
            ended = []
            for row in list(rows):
                job = row[0]
                if job.is_cancelled():
                    rows.remove(row)
                    ended.append((job, None))
                    continue
                row[1] += 1
                if row[1] >= params.steps:
                    rows.remove(row)
                    self.finished.append(job.index)
                    ended.append((job, outcome(job.index, params)))
                elif job.wants_preview(row[1]):
                    # In flight: the picture so far, its value the step it is at.
                    side = params.output_size
                    picture = np.full((side, side, 3), row[1] % 256, np.uint8)
                    ended.append((job, FilterPreview(job.index, row[1], float(row[1]), picture)))
            yield ended


def standin_maps(model: str, layer: str, image: np.ndarray) -> np.ndarray:
    """The stand-in layer on an image: channel c is the 16 px-pooled brightness times (c + 1)."""
    cells = image.shape[0] // 16
    pooled = image[: cells * 16, : cells * 16].astype(np.float32).mean(axis=2)
    pooled = pooled.reshape(cells, 16, cells, 16).mean(axis=(1, 3))
    return pooled[..., None] * np.arange(1, CHANNELS + 1, dtype=np.float32)


@dataclass
class IndexMaps:
    """The stand-in layer for dataset indexes (standin_maps per image), counting its images.

    `gate`, when given, is waited for before every batch: a test holds a build mid-way.
    """

    images: int = 0
    batches: list[int] = field(default_factory=list)
    gate: threading.Event | None = None

    def maxima(
        self, model: str, layer: str, images: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        if self.gate is not None and len(images) and images.any():  # the warm-up is blank
            assert self.gate.wait(30), "the test never opened the gate"
        maps = np.stack([standin_maps(model, layer, image) for image in images])
        flat = maps.reshape(len(images), -1, CHANNELS)
        if images.any():
            self.images += len(images)
            self.batches.append(len(images))
        return flat.max(axis=1), flat.argmax(axis=1).astype(np.int32), maps.shape[1:3]

    def receptive_field(self, model: str, layer: str, size: int) -> ReceptiveField:
        return ReceptiveField(16, 16, 0)


def outcome(index: int, params: AscentParams) -> FilterOutcome:
    dead = index % 7 == 3
    side = params.output_size
    image = None if dead else np.full((side, side, 3), index % 256, np.uint8)
    curve = tuple(float(step) for step in range(params.steps))
    return FilterOutcome(index, float(index), dead, image, params.steps, 0.01, curve=curve)


class StandIn:
    """A grpc.aio server with the real servicer on its own thread and event loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        engine: Engine | None = None,
        queue_limit: int = 4096,
        limits: Limits | None = None,
        cache_backend: Backend | None = None,
        gateway: bool = False,
        authenticator: TokenAuthenticator | None = None,
        stall_seconds: float = 30,
        cache_rest_seconds: float = 0,
        http_policy: HttpPolicy | None = None,
        admission: StreamAdmission | None = None,
        new_steps: NewStepBudget | None = None,
        loading: bool = False,
        datasets: dict[str, Path] | None = None,
        index_maps: IndexMaps | None = None,
    ) -> None:
        self.host = host
        self.loading = loading
        self.gateway = gateway
        self.authenticator = authenticator
        self.http_policy = http_policy or HttpPolicy(stall_seconds=stall_seconds, loopback=True)
        self.http_port = 0
        self.engine = engine or Engine()
        self.limits = limits or Limits()
        self.queue_limit = queue_limit
        self.metrics = Metrics()
        self.cache = (
            ResultCache(cache_backend, SECRET, self.metrics, retry_seconds=cache_rest_seconds)
            if cache_backend
            else None
        )
        self.scheduler = Scheduler(
            self.engine,  # type: ignore[arg-type]
            SchedulerPolicy(queue_limit=queue_limit, client_queue_limit=queue_limit),
            observer=self.metrics,
            results=self.cache,
        )
        server_limits = limits_message(self.limits, queue_limit=queue_limit)
        folders = tuple((datasets or {}).items())
        models = {"vgg16": Model(datasets=folders)}
        self.index_maps = index_maps or IndexMaps()
        examples = DatasetExamples(
            models,  # type: ignore[arg-type]
            {"vgg16": {name: Dataset(name, folder) for name, folder in folders}},
            self.index_maps,
            self.scheduler,
            IndexStore(cache_backend, SECRET, self._index_fault) if cache_backend else None,
            self.metrics,
        )
        self.servicer = FilterVisualizerServicer(
            models,  # type: ignore[arg-type]
            self.scheduler,
            ServingPolicy(self.limits, server_limits, stall_seconds, max_message_bytes=64 << 20),
            admission=admission or StreamAdmission(64, 8),
            metrics=self.metrics,
            cache=self.cache,
            new_steps=new_steps,
            analyses=Analyses(models, standin_maps, self.limits),  # type: ignore[arg-type]
            examples=examples if folders else None,
        )
        self.front = Front(self.metrics, server_limits)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _index_fault(self, operation: str) -> None:
        self.metrics.cache_errors.labels(operation).inc()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._started.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.server = grpc.aio.server(interceptors=[ServerPolicy(self.metrics)])
        self.server.add_generic_rpc_handlers((self.front.rpc_handler(),))
        enable_reflection(self.server, ("filtercast.v1.FilterVisualizerService",))
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.port = self.server.add_insecure_port(f"{host}:0")
        await self.server.start()
        if self.gateway:
            gateway = Gateway(
                self.front,
                self.http_policy,
                metrics=self.metrics,
                cache=self.cache,
                authenticator=self.authenticator,
            )
            self.http_listener = await serve_gateway(gateway, self.host, 0)
            self.http_port = self.http_listener.port

    def __enter__(self) -> "StandIn":
        self.scheduler.start()
        if not self.loading:  # else the test opens it: the models "finish loading"
            self.front.open(self.servicer)
        self._thread.start()
        assert self._started.wait(30), "the stand-in server did not start"
        return self

    @property
    def http_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.http_port}"

    def __exit__(self, *exc: object) -> None:
        if self.gateway:
            asyncio.run_coroutine_threadsafe(self.http_listener.close(), self.loop).result(30)
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.scheduler.stop()
        if self.servicer.examples is not None:
            self.servicer.examples.close()
        if self.cache is not None:
            self.cache.close()

    def streams_open(self) -> int:
        return self.servicer.admission.open

    def wait_idle(self, timeout: float = 30) -> None:
        """Until no stream is open (a cancelled one has been wound down)."""
        deadline = time.monotonic() + timeout
        while self.streams_open() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.streams_open(), "a stream is still open"
