"""Server settings: command-line flags, each with a FILTERCAST_* environment twin.

A flag wins over its environment variable, which wins over the default.
"""

import argparse
import os
from dataclasses import dataclass, fields

from filtercast_client.client import MAX_MESSAGE_BYTES  # one limit for both sides
from filtercast_server.presets import Limits

__all__ = ["MAX_MESSAGE_BYTES", "Settings", "build_parser", "parse_settings"]


@dataclass(frozen=True)
class Settings:
    """Everything `filtercast serve` can be told."""

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9090
    models: str = "vgg16"
    weights: str = "imagenet"
    device: str = "auto"
    precision: str = "auto"
    max_batch: int = 0  # 0: the device's default (Device.batch_limits)
    max_batch_pixels: int = 0
    queue_limit: int = 4096
    max_concurrent_streams: int = 64
    min_size: int = Limits.min_size
    max_size: int = Limits.max_size
    max_steps: int = Limits.max_steps
    max_filters: int = Limits.max_filters
    grace_seconds: float = 30.0
    log_level: str = "INFO"
    seed: int = 0  # of random weights

    @property
    def model_names(self) -> list[str]:
        """The models to load, from the comma list."""
        return [name.strip() for name in self.models.split(",") if name.strip()]

    def limits(self) -> Limits:
        """Request limits derived from the settings."""
        return Limits(
            min_size=self.min_size,
            max_size=self.max_size,
            max_steps=self.max_steps,
            max_filters=self.max_filters,
        )


HELP = {
    "host": "listen address (0.0.0.0 for every interface)",
    "port": "gRPC port",
    "metrics_port": "Prometheus /metrics port (0: off)",
    "models": "comma list of models to load: vgg16, vgg19, resnet50v2",
    "weights": "imagenet (Keras download), random, or a .weights.h5 path (single model)",
    "device": "auto, cpu or gpu",
    "precision": "default precision of requests that ask for AUTO: auto, float32, bfloat16",
    "max_batch": "most filters in one batch (0: 8 on CPU, 256 on GPU)",
    "max_batch_pixels": "most pixels in one batch at the largest round (0: 1 Mpx CPU, 8 Mpx GPU)",
    "queue_limit": "most filters queued; more is RESOURCE_EXHAUSTED at once",
    "max_concurrent_streams": "most RPCs in progress; more is RESOURCE_EXHAUSTED",
    "min_size": "smallest image side a request may ask for",
    "max_size": "largest image side a request may ask for",
    "max_steps": "most ascent steps per round a request may ask for",
    "max_filters": "most filters in one request",
    "grace_seconds": "on SIGTERM, how long in-flight streams may take to finish",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "seed": "seed of random weights",
}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Flags for every setting, defaulting to FILTERCAST_<NAME> or the built-in default."""
    parser = parser or argparse.ArgumentParser(prog="filtercast serve")
    for field in fields(Settings):
        env = f"FILTERCAST_{field.name.upper()}"
        kind = type(field.default)
        default = kind(os.environ[env]) if env in os.environ else field.default
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=kind,
            default=default,
            help=f"{HELP[field.name]} [env {env}, default {field.default}]",
        )
    return parser


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Settings from the command line and the environment."""
    args = build_parser().parse_args(argv)
    return Settings(**{field.name: getattr(args, field.name) for field in fields(Settings)})
