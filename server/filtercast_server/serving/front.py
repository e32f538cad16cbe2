"""The service as the network sees it, from the moment its ports open.

The ports open (and health says NOT_SERVING) before the models are loaded,
so that probes find the process at once; the servicer can only be built once
they are. Until then ListModels lists the presets and limits but no model,
and the other calls are UNAVAILABLE with a retry hint, which clients retry;
once `open` hands it the servicer, each call goes there; when `draining`,
new streams are refused so clients go to another replica. gRPC and the HTTP
gateway both call these methods.
"""

from typing import Any

import grpc
from google.protobuf.message import Message

from filtercast.contract import SERVICE
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.observability.metrics import Metrics
from filtercast_server.serving.servicer import FilterVisualizerServicer, decode
from filtercast_server.serving.status import ErrorFacts, refuse
from filtercast_server.serving.wire import preset_infos

LOADING_RETRY_SECONDS = 5
DRAINING_RETRY_SECONDS = 1


class Front:
    """filtercast.v1.FilterVisualizerService, answered by the servicer once there is one."""

    def __init__(self, metrics: Metrics, server_limits: pb.ServerLimits) -> None:
        self.metrics = metrics
        self.server_limits = server_limits
        self.servicer: FilterVisualizerServicer | None = None
        self.draining = False

    def open(self, servicer: FilterVisualizerServicer) -> None:
        """The models are loaded: calls go to `servicer` from now on."""
        self.servicer = servicer

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The service's methods, taking raw request bytes (decoded by the servicer)."""

        def unary(method: Any, response: type[Message]) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method, response_serializer=response.SerializeToString
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ListModels": unary(self.ListModels, pb.ListModelsResponse),
                "DescribeModel": unary(self.DescribeModel, pb.DescribeModelResponse),
                "AnalyzeImage": unary(self.AnalyzeImage, pb.AnalyzeImageResponse),
                "DatasetExamples": grpc.unary_stream_rpc_method_handler(
                    self.DatasetExamples,
                    response_serializer=pb.DatasetExamplesResponse.SerializeToString,
                ),
                "VisualizeFilters": grpc.unary_stream_rpc_method_handler(
                    self.VisualizeFilters,
                    response_serializer=pb.VisualizeFiltersResponse.SerializeToString,
                ),
            },
        )

    async def _unavailable(self, context: Any, reason: str, message: str, retry: float) -> None:
        """End the call UNAVAILABLE (clients retry it), counted by `reason`."""
        self.metrics.rejected.labels(reason).inc()
        await refuse(context, grpc.StatusCode.UNAVAILABLE, message, ErrorFacts(retry_after=retry))

    async def _ready(self, context: Any) -> FilterVisualizerServicer:
        if self.servicer is None:
            await self._unavailable(
                context, "not_ready", "models are still loading", LOADING_RETRY_SECONDS
            )
        assert self.servicer is not None
        return self.servicer

    async def ListModels(self, data: bytes, context: Any) -> pb.ListModelsResponse:  # noqa: N802
        """Every loaded model (none yet while loading), every preset, this server's limits."""
        if self.servicer is None:
            await decode(data, pb.ListModelsRequest, context, self.metrics)
            return pb.ListModelsResponse(presets=preset_infos(), limits=self.server_limits)
        return await self.servicer.ListModels(data, context)

    async def DescribeModel(self, data: bytes, context: Any) -> pb.DescribeModelResponse:  # noqa: N802
        """One loaded model, or NOT_FOUND listing the served ones (UNAVAILABLE while loading)."""
        return await (await self._ready(context)).DescribeModel(data, context)

    async def _streaming(self, context: Any) -> FilterVisualizerServicer:
        """The servicer for a new stream; UNAVAILABLE while loading or draining."""
        servicer = await self._ready(context)
        if self.draining:
            await self._unavailable(
                context,
                "draining",
                "this server is shutting down; another replica will answer",
                DRAINING_RETRY_SECONDS,
            )
        return servicer

    async def VisualizeFilters(self, data: bytes, context: Any) -> None:  # noqa: N802
        """Accepted, one FilterResult per filter as it finishes, Grid, Summary."""
        await (await self._streaming(context)).VisualizeFilters(data, context)

    async def AnalyzeImage(self, data: bytes, context: Any) -> pb.AnalyzeImageResponse:  # noqa: N802
        """The top channels of a layer on one image, with heatmaps (UNAVAILABLE while loading)."""
        return await (await self._ready(context)).AnalyzeImage(data, context)

    async def DatasetExamples(self, data: bytes, context: Any) -> None:  # noqa: N802
        """A dataset's best images per channel, its index built when needed."""
        await (await self._streaming(context)).DatasetExamples(data, context)
