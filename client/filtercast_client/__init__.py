"""filtercast client: library and CLI for the filtercast gRPC service (no TensorFlow).

from filtercast_client import Client
"""

from filtercast_client.analysis import ChannelMap, ImageAnalysis
from filtercast_client.client import TLS, AsyncClient, Client
from filtercast_client.errors import (
    Cancelled,
    DeadlineExceeded,
    FiltercastError,
    InvalidRequest,
    NotFound,
    Overloaded,
    ProtocolError,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from filtercast_client.events import (
    Accepted,
    DenseLayerInfo,
    FilterImage,
    FilterPreview,
    GridImage,
    LayerInfo,
    ModelInfo,
    PresetInfo,
    ServerInfo,
    Summary,
)
from filtercast_client.examples import (
    ChannelExamples,
    DatasetExample,
    DatasetExamples,
    IndexProgress,
)

__all__ = [
    "TLS",
    "Accepted",
    "AsyncClient",
    "Cancelled",
    "ChannelExamples",
    "ChannelMap",
    "Client",
    "DatasetExample",
    "DatasetExamples",
    "DeadlineExceeded",
    "DenseLayerInfo",
    "FilterImage",
    "FilterPreview",
    "FiltercastError",
    "GridImage",
    "ImageAnalysis",
    "IndexProgress",
    "InvalidRequest",
    "LayerInfo",
    "ModelInfo",
    "NotFound",
    "Overloaded",
    "PresetInfo",
    "ProtocolError",
    "ServerError",
    "ServerInfo",
    "Summary",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]


def __getattr__(name: str) -> str:
    """`__version__`, read from the installed metadata when first asked for."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from filtercast import installed_version

    return installed_version()
