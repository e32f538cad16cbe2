"""filtercast client: library and CLI for the filtercast gRPC service (no TensorFlow).

from filtercast_client import Client
"""

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


def __getattr__(name: str) -> str:
    """`__version__`, read from the installed metadata when first asked for.

    importlib.metadata costs ~40 ms to import: `--help` should not pay for it.
    """
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("filtercast")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
