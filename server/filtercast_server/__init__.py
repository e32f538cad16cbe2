"""filtercast server: models, gradient-ascent engine, scheduler and gRPC API."""

__version__ = "0.1.0"
