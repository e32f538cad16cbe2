"""filtercast client: library and CLI for the filtercast gRPC service (no TensorFlow)."""

__version__ = "0.1.0"
