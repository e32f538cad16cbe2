"""filtercast client: library and CLI for the filtercast gRPC service (no TensorFlow).

from filtercast_client import Client
"""

from importlib.metadata import PackageNotFoundError, version

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
    FilterImage,
    GridImage,
    LayerInfo,
    ModelInfo,
    PresetInfo,
    ServerInfo,
    Summary,
)

try:
    __version__ = version("filtercast")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "TLS",
    "Accepted",
    "AsyncClient",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "FilterImage",
    "FiltercastError",
    "GridImage",
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
