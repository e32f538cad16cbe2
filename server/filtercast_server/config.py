"""Server settings: command-line flags (click), each with a FILTERCAST_* environment twin.

A flag wins over its environment variable, which wins over the default.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import click

from filtercast.contract import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES
from filtercast_server.datasets import MAX_IMAGES
from filtercast_server.model_registry import ModelConfig, model_configs
from filtercast_server.params import Limits

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_REQUEST_BYTES",
    "Settings",
    "SettingsError",
    "settings_from",
    "settings_options",
]


class SettingsError(ValueError):
    """Settings that contradict each other (the server refuses to start)."""


@dataclass(frozen=True)
class Settings:
    """Everything `filtercast serve` can be told."""

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9464
    health_port: int = 0
    model: tuple[str, ...] = ("vgg16",)
    models_file: str = ""
    allow_unsafe: tuple[str, ...] = ()
    custom_objects: tuple[str, ...] = ()
    weights: str = "imagenet"
    dataset: tuple[str, ...] = ()
    dataset_max_images: int = MAX_IMAGES
    device: str = "auto"
    precision: str = "auto"
    max_batch: int = 0  # 0: the device's default (Device.batch_limits)
    max_batch_pixels: int = 0
    max_cohorts: int = 4
    queue_limit: int = 4096
    client_queue_limit: int = 2048
    max_concurrent_streams: int = 64
    client_max_streams: int = 8
    client_new_steps_per_minute: int = 20
    stream_buffer: int = 16
    stall_seconds: float = 60.0
    max_stream_seconds: float = 3600.0
    max_connections: int = 1000
    connection_idle_seconds: float = 300.0
    connection_max_age_seconds: float = 3600.0
    handshake_timeout_seconds: float = 10.0
    min_size: int = Limits.min_size
    max_size: int = Limits.max_size
    max_steps: int = Limits.max_steps
    max_filters: int = Limits.max_filters
    max_request_cost: int = Limits.max_cost
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    auth_tokens_file: str = ""
    grace_seconds: float = 30.0
    log_level: str = "INFO"
    seed: int = 0  # of random weights
    cache: str = "auto"
    cache_max_bytes: int = 2 * 1024**3
    cache_ttl_seconds: float = 30 * 24 * 3600.0
    cache_secret_file: str = ""
    http_port: int = 0
    http_max_connections: int = 256
    http_read_seconds: float = 10.0

    def model_configs(self) -> list[ModelConfig]:
        """The models to serve (RegistryError, a SettingsError, when the settings are wrong)."""
        flags = () if self.models_file and self.model == ("vgg16",) else self.model
        return model_configs(
            flags, self.models_file, self.allow_unsafe, self.custom_objects, self.dataset
        )

    def limits(self) -> Limits:
        """Request limits derived from the settings."""
        return Limits(
            min_size=self.min_size,
            max_size=self.max_size,
            max_steps=self.max_steps,
            max_filters=self.max_filters,
            max_cost=self.max_request_cost,
        )

    def consistent(self) -> "Settings":
        """These settings with the per-client limits capped by the global ones.

        A request larger than a client may queue could never run, so
        --max-filters <= --client-queue-limit <= --queue-limit, and
        --client-max-streams <= --max-concurrent-streams.
        """
        client_queue = min(self.client_queue_limit, self.queue_limit)
        return dataclasses.replace(
            self,
            client_queue_limit=client_queue,
            max_filters=min(self.max_filters, client_queue),
            client_max_streams=min(self.client_max_streams, self.max_concurrent_streams),
        )

    def check(self) -> None:
        """Raise SettingsError naming the first pair of settings that cannot work together."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise SettingsError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        positive = (
            "max_cohorts",
            "stream_buffer",
            "stall_seconds",
            "max_stream_seconds",
            "max_connections",
            "connection_idle_seconds",
            "connection_max_age_seconds",
            "handshake_timeout_seconds",
            "http_max_connections",
            "http_read_seconds",
            "max_concurrent_streams",
            "client_max_streams",
            "client_new_steps_per_minute",
            "dataset_max_images",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"--{name.replace('_', '-')} must be positive")
        if self.cache_max_bytes < 1024**2:
            raise SettingsError("--cache-max-bytes must be at least 1 MiB (1048576)")
        if self.cache_ttl_seconds < 0:
            raise SettingsError("--cache-ttl-seconds must be 0 (never expire) or positive")
        if self.http_port and self.http_port in (self.port, self.metrics_port, self.health_port):
            raise SettingsError(
                "--http-port must differ from --port, --metrics-port and --health-port"
            )


HELP = {
    "host": "listen address (0.0.0.0 for every interface)",
    "port": "gRPC port",
    "metrics_port": "Prometheus /metrics port (0: off)",
    "health_port": "plaintext port serving only grpc.health.v1, for probes when --port uses TLS "
    "(0: off)",
    "model": "a model to serve, repeatable (comma lists too): a built-in (vgg16, vgg19, "
    "resnet50v2) or NAME=PATH of a Keras .keras / full-model .h5 file",
    "models_file": "TOML file of [models.NAME] tables: path, preprocessing, default_layer, ... "
    "(see filtercast_server/model_registry.py); replaces the default --model vgg16",
    "allow_unsafe": "a model that may load with Keras safe_mode off, repeatable: loading it "
    "runs code stored in the file (Lambda layers)",
    "custom_objects": "module:attribute holding a custom layer/function (or a dict of them) "
    "that model files may use, repeatable",
    "dataset": "NAME=DIR: an image folder (PNG/JPEG, recursive) whose images that excite each "
    "filter most the server can show, for every model served, repeatable (a models file gives "
    "a model its own)",
    "dataset_max_images": "most images a dataset folder is indexed with (in path order; the "
    "rest are skipped and counted)",
    "weights": "imagenet (Keras download), random, or a .weights.h5 path (single model)",
    "device": "auto, cpu or gpu",
    "precision": "default precision of requests that ask for AUTO: auto, float32, bfloat16",
    "max_batch": "most filters in one batch (0: 8 on CPU, 256 on GPU)",
    "max_batch_pixels": "most pixels in one batch at the largest round (0: 1 Mpx CPU, 8 Mpx GPU)",
    "max_cohorts": "batches of different parameters advanced in turn, step by step",
    "queue_limit": "most filters queued in all; more is RESOURCE_EXHAUSTED at once",
    "client_queue_limit": "most filters one client (token, else address) may have queued",
    "max_concurrent_streams": "most VisualizeFilters streams open; more is RESOURCE_EXHAUSTED "
    "(health, reflection and model listing are never limited)",
    "client_max_streams": "most VisualizeFilters streams one client may have open",
    "client_new_steps_per_minute": "most requests a minute one client may make that need a step "
    "not compiled yet (a new objective structure, preset or precision: each traces the model)",
    "stream_buffer": "finished pictures a stream may hold unsent before its work pauses",
    "stall_seconds": "a stream whose client reads nothing for this long is ended",
    "max_stream_seconds": "longest a stream may run (the deadline of streams that set none)",
    "max_connections": "most client connections at once (capped below the open-file limit)",
    "connection_idle_seconds": "close a connection with no call for this long",
    "connection_max_age_seconds": "ask clients to reconnect after this long (spreads load over "
    "new replicas); calls in flight get --max-stream-seconds to finish",
    "handshake_timeout_seconds": "close a connection that has not completed its handshake",
    "min_size": "smallest image side a request may ask for",
    "max_size": "largest image side a request may ask for",
    "max_steps": "most ascent steps per round a request may ask for",
    "max_filters": "most filters in one request",
    "max_request_cost": "most filters x pixels x steps (over all rounds) in one request",
    "tls_cert": "PEM certificate chain: serve TLS (files are re-read when they change)",
    "tls_key": "PEM private key of --tls-cert",
    "tls_client_ca": "PEM CA bundle: require client certificates signed by it (mTLS)",
    "auth_tokens_file": "file of 'NAME TOKEN [ROLE]' lines: require a bearer token on every "
    "call but health",
    "grace_seconds": "on SIGTERM, how long in-flight streams may take to finish",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "seed": "seed of random weights",
    "cache": "result cache: auto ($XDG_CACHE_HOME/filtercast, else ~/.cache/filtercast), a "
    "directory, redis://HOST:PORT/DB (rediss:// for TLS) shared by replicas, or off",
    "cache_max_bytes": "a cache directory's size bound: least recently used pictures go first "
    "(Redis: bound it with its own maxmemory and maxmemory-policy allkeys-lru)",
    "cache_ttl_seconds": "cached pictures expire after this long (0: never)",
    "cache_secret_file": "file holding the secret (32+ bytes) that authenticates cache entries; "
    "the same on every replica sharing a cache, required for Redis (a directory keeps its own "
    "in DIR/secret)",
    "http_port": "HTTP/JSON gateway and browser gallery port (0: off); TLS as --port when set",
    "http_max_connections": "most HTTP gateway connections at once (more are answered 503 and "
    "closed); with --max-connections, capped below the open-file limit",
    "http_read_seconds": "an HTTP request's headers, then its body, must each arrive within "
    "this; idle HTTP connections close after it too",
}


def settings_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """One click option per setting, each read from FILTERCAST_<NAME> when the flag is absent.

    A flag wins over its variable, which wins over the default; a bad value of
    either is a one-line usage error naming the flag and the variable.
    """
    for field in reversed(fields(Settings)):
        repeated = isinstance(field.default, tuple)
        names = [f"--{field.name.replace('_', '-')}"] + (
            ["--models"] if field.name == "model" else []
        )
        function = click.option(
            *names,
            field.name,
            type=str if repeated else type(field.default),
            multiple=repeated,
            default=field.default,
            envvar=ENV_NAMES.get(field.name, f"FILTERCAST_{field.name.upper()}"),
            show_envvar=True,
            show_default=True,
            help=HELP[field.name],
        )(function)
    return function


# Repeatable settings read several values from one variable, separated by spaces.
ENV_NAMES = {"model": "FILTERCAST_MODELS"}


def settings_from(values: dict[str, Any]) -> Settings:
    """Settings from the parsed options."""
    chosen: dict[str, Any] = {
        field.name: tuple(values[field.name])
        if isinstance(field.default, tuple)
        else values[field.name]
        for field in fields(Settings)
    }
    return Settings(**chosen)
