"""The command line's shared options: where the servers are, and what to ask them."""

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from filtercast import contract
from filtercast_client.client import TLS, Client
from filtercast_client.errors import FiltercastError, ProtocolError
from filtercast_client.request import load_vector

WEIGHTS_HELP = "imagenet (Keras download), random, or a .weights.h5 path [env FILTERCAST_WEIGHTS]"


def default_weights() -> str:
    """--weights default: $FILTERCAST_WEIGHTS, else imagenet."""
    return os.environ.get("FILTERCAST_WEIGHTS", "imagenet")


def rpc_failure(error: FiltercastError) -> click.ClickException:
    """A service error as one readable line: status code, message, the field at fault."""
    if isinstance(error, ProtocolError):
        return click.ClickException(f"the server broke the protocol: {error.message}")
    where = f" [field: {error.field}]" if error.field else ""
    return click.ClickException(f"{error.status.name}: {error.message}{where}")


@dataclass(frozen=True)
class Connection:
    """Where and how the CLI reaches servers: addresses, TLS, bearer token."""

    servers: list[str]
    tls: TLS | None = None
    token: str | None = None

    def client(self) -> Client:
        """A client on these settings (a usage error for a malformed address)."""
        try:
            return Client(self.servers, tls=self.tls, token=self.token)
        except ValueError as error:
            raise click.UsageError(str(error)) from error


# The options every command that reaches servers takes (see connection_options).
CONNECTION_OPTIONS = [
    click.option(
        "--server",
        "servers",
        multiple=True,
        default=["127.0.0.1:50051"],
        show_default=True,
        help="HOST:PORT, [IPV6]:PORT or a gRPC target (dns:///NAME:PORT) of a server; "
        "repeat it to balance over several.",
    ),
    click.option("--tls", is_flag=True, help="Use TLS, trusting the system's roots."),
    click.option(
        "--tls-ca",
        type=click.Path(exists=True, dir_okay=False),
        help="PEM roots to trust (implies --tls).",
    ),
    click.option(
        "--tls-cert",
        type=click.Path(exists=True, dir_okay=False),
        help="PEM client certificate, for mTLS.",
    ),
    click.option(
        "--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM key of --tls-cert."
    ),
    click.option("--tls-server-name", help="Name to check in the server's certificate."),
    click.option(
        "--token-file",
        type=click.Path(exists=True, dir_okay=False),
        help="File holding a bearer token [default: $FILTERCAST_TOKEN].",
    ),
]


def connection_options(function: Any) -> Any:
    """--server (repeatable), TLS and token options, handed to the command as `connection`."""

    @functools.wraps(function)
    def wrapper(
        servers: tuple[str, ...],
        tls: bool,
        tls_ca: str | None,
        tls_cert: str | None,
        tls_key: str | None,
        tls_server_name: str | None,
        token_file: str | None,
        **kwargs: Any,
    ) -> Any:
        secure = tls or any((tls_ca, tls_cert, tls_key, tls_server_name))
        try:
            settings = (
                TLS.from_files(tls_ca, tls_cert, tls_key, tls_server_name) if secure else None
            )
        except ValueError as error:
            raise click.UsageError(str(error)) from error
        token = (
            Path(token_file).read_text().strip()
            if token_file
            else os.environ.get("FILTERCAST_TOKEN") or None
        )
        return function(connection=Connection(list(servers), settings, token), **kwargs)

    for option in reversed(CONNECTION_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def request_options(function: Any) -> Any:
    """Options shared by visualize and demo."""
    options = [
        click.option(
            "--preset",
            type=click.Choice(list(contract.PRESETS), case_sensitive=False),
            default="classic",
            show_default=True,
        ),
        click.option("--model", default="", help="Default: the preset's."),
        click.option("--layer", default="", help="Default: the preset's."),
        click.option(
            "--filters",
            callback=check_filter_spec,
            help='Ranges, indices and "all", e.g. "0:64", "1,5,9", "0:8,100:104".',
        ),
        click.option(
            "--precision",
            type=click.Choice(list(contract.PRECISIONS), case_sensitive=False),
            default="auto",
            show_default=True,
        ),
        click.option("--seed", type=int, help="Default: drawn by the server and recorded."),
        click.option("--size", type=int, help="Override the preset's image size."),
        click.option("--steps", type=int, help="Override the preset's steps per round."),
        click.option(
            "--set",
            "settings",
            multiple=True,
            callback=parse_settings,
            metavar="NAME=VALUE",
            help="Override a preset parameter, e.g. --set revive=2 --set jitter=4 "
            "(repeatable; the README's Presets section lists them).",
        ),
        click.option("--timeout", type=float, help="Deadline of the whole stream, seconds."),
    ]
    for option in reversed(options):
        function = option(function)
    return objective_options(function)


def objective_options(function: Any) -> Any:
    """What to visualize beyond filters, and where to start from.

    --objective, --diversity, --interpolate, --frames; --image, --pull and
    --pull-space accentuate a start image.
    """
    options = [
        click.option(
            "--objective",
            "objectives",
            multiple=True,
            callback=check_objectives,
            metavar="EXPR",
            help='Instead of --filters, one picture each (repeatable): "block5_conv1:12", '
            '"block5_conv1:12@center", "layer(block4_conv3)", "dense_1:3", '
            '"block5_conv1:12 - 0.5*block5_conv1:40", "direction(block5_conv1, cav.npy)".',
        ),
        click.option(
            "--diversity", type=int, default=0, metavar="K", help="K differing pictures of each."
        ),
        click.option("--diversity-weight", type=float, help="How strongly they differ (1)."),
        click.option("--interpolate", metavar="A..B", help="Frames from objective A to B."),
        click.option("--frames", type=int, default=8, show_default=True),
        click.option(
            "--image",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Accentuate: start every picture from this PNG or JPEG, pulled towards it.",
        ),
        click.option(
            "--pull",
            type=click.FloatRange(0, 1000),
            help="How strongly the picture stays near --image (0..1000; default 100 in "
            "pixels, 8 in features; 0: the image is only the start).",
        ),
        click.option(
            "--pull-space",
            type=click.Choice(list(contract.PULL_SPACES), case_sensitive=False),
            default=contract.PULL_SPACE_DEFAULT,
            show_default=True,
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def check_objectives(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[Any]:
    """--objective parsed with the contract's grammar before anything connects."""
    try:
        return [contract.parse_objective(value, load_vector) for value in values]
    except contract.ContractError as error:
        raise click.BadParameter(str(error)) from error


def parse_settings(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, Any]:
    """--set NAME=VALUE pairs as overrides; numbers become int or float, the rest stay text."""
    settings: dict[str, Any] = {}
    for item in values:
        name, equals, text = item.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE")
        value: Any = text
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
        settings[name.strip()] = value
    return settings


def check_filter_spec(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """--filters checked against the contract's grammar before anything connects."""
    if value is not None:
        try:
            contract.parse_filter_spec(value)
        except contract.ContractError as error:
            raise click.BadParameter(str(error)) from error
    return value


def request_of(
    preset: str,
    model: str,
    layer: str,
    filters: str | None,
    precision: str,
    seed: int | None,
    size: int | None,
    steps: int | None,
    settings: dict[str, Any] | None = None,
    objectives: Sequence[Any] = (),
    diversity: int = 0,
    diversity_weight: float | None = None,
    interpolate: str | None = None,
    frames: int = 8,
    image: Path | None = None,
    pull: float | None = None,
    pull_space: str = contract.PULL_SPACE_DEFAULT,
) -> dict[str, Any]:
    """Keyword arguments of Client.visualize from the CLI options."""
    if pull is not None and image is None:
        raise click.UsageError("--pull is the weight towards a start image: give --image too")
    if interpolate is not None:
        try:
            contract.parse_interpolation(interpolate, frames, load_vector)
        except contract.ContractError as error:
            raise click.BadParameter(str(error), param_hint="--interpolate") from error
    return {
        "objectives": list(objectives),
        "diversity": diversity,
        "diversity_weight": diversity_weight,
        "interpolate": interpolate,
        "frames": frames,
        "image": image,
        "pull": pull,
        "pull_space": pull_space.lower(),
        "overrides": settings or {},
        "preset": preset.lower(),
        "model": model,
        "layer": layer,
        "filters": filters,
        "precision": precision.lower(),
        "seed": seed,
        "size": size,
        "steps": steps,
    }
