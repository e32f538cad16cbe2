"""The ``filtercast`` command line: models, layers, visualize, demo, render, serve."""

import functools
import os
import signal
import sys
import tempfile
import time
import urllib.parse
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from filtercast import contract, manifest
from filtercast_client.client import TLS, Client
from filtercast_client.errors import FiltercastError, ProtocolError
from filtercast_client.events import Accepted, FilterImage, GridImage, Summary

WEIGHTS_HELP = "imagenet (Keras download), random, or a .weights.h5 path [env FILTERCAST_WEIGHTS]"
console = Console(stderr=True, soft_wrap=True)


def default_weights() -> str:
    """--weights default: $FILTERCAST_WEIGHTS, else imagenet."""
    return os.environ.get("FILTERCAST_WEIGHTS", "imagenet")


class RateColumn(ProgressColumn):
    """Filters per second since the stream started.

    Overall, not rich's short-window speed: results arrive in bursts as
    batches finish, which a window turns into wild numbers.
    """

    def render(self, task: Any) -> Text:
        """Filters done over seconds elapsed; a dash before the first result."""
        elapsed = task.elapsed
        if not task.completed or not elapsed:
            return Text("- filters/s", style="cyan")
        return Text(f"{task.completed / elapsed:.2f} filters/s", style="cyan")


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


def connection_options(function: Any) -> Any:
    """--server (repeatable), TLS and token options, handed to the command as `connection`."""
    options = [
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

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


SERVER_COMMANDS = {"serve": "serve", "clear-cache": "clear_cache"}


class Commands(click.Group):
    """The CLI's commands; serve and clear-cache come from the server package when named."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command, the server's included."""
        return sorted([*super().list_commands(ctx), *SERVER_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """The command called `name` (the server's import no TensorFlow until they run)."""
        if name not in SERVER_COMMANDS:
            return super().get_command(ctx, name)
        try:
            from filtercast_server import command
        except ImportError as error:  # a client-only install
            raise click.ClickException(
                f"{name} needs the server extra ({error}); pip install 'filtercast[server]'"
            ) from error
        found: click.Command = getattr(command, SERVER_COMMANDS[name])
        return found


@click.group(cls=Commands)
@click.version_option(package_name="filtercast")
def main() -> None:
    """Show what the filters of a convolutional network have learned."""


@main.command()
@connection_options
def models(connection: Connection) -> None:
    """List the models a server has loaded."""
    table = Table(
        "model", "kind", "weights", "sha256", "input", "device", "auto precision", "layers"
    )
    try:
        with connection.client() as client:
            for info in client.list_models():
                side = f"{info.input_size}px" if info.input_size else "any"
                table.add_row(
                    info.name,
                    info.kind,
                    info.weights_source,
                    info.weights_sha256[:12] or "-",
                    f"{side} x {info.input_channels}",
                    info.device,
                    info.auto_precision,
                    str(len(info.layers)),
                )
    except FiltercastError as error:
        raise rpc_failure(error) from error
    Console().print(table)


@main.command()
@connection_options
@click.option("--model", default="vgg16", show_default=True)
def layers(connection: Connection, model: str) -> None:
    """List a model's layers: name, type, channels, output stride."""
    table = Table("layer", "type", "channels", "stride", "dtype")
    try:
        with connection.client() as client:
            for layer in client.describe(model).layers:
                table.add_row(
                    layer.name,
                    layer.type,
                    str(layer.channels),
                    str(layer.output_stride),
                    layer.dtype,
                )
    except FiltercastError as error:
        raise rpc_failure(error) from error
    Console().print(table)


def visualize_into(
    connection: Connection, out: Path, timeout: float | None, **request: Any
) -> dict[str, Any]:
    """Stream one request into `out` with a progress bar; the manifest written.

    Ctrl-C cancels the stream, keeps what arrived and exits 130.
    """
    folder: manifest.OutputFolder | None = None
    client = connection.client()
    try:
        stream = client.visualize(timeout=timeout, **request)
    except FiltercastError as error:
        client.close()
        raise rpc_failure(error) from error
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("connecting", total=None)
            for event in stream:
                if isinstance(event, Accepted):
                    folder = manifest.OutputFolder(out, manifest_fields(event, connection))
                    progress.update(
                        task,
                        total=len(event.filters),
                        description=f"{event.params['layer']} (seed {event.seed})",
                    )
                elif isinstance(event, FilterImage):
                    assert folder is not None  # EventChecker: Accepted comes first
                    folder.add_filter(
                        event.index,
                        event.loss,
                        event.dead,
                        event.steps,
                        event.seconds,
                        event.image,
                        event.revived,
                        event.cached,
                    )
                    progress.advance(task)
                elif isinstance(event, GridImage):
                    assert folder is not None
                    folder.set_grid(event.image, event.n, event.margin, event.order)
                elif isinstance(event, Summary):
                    progress.update(task, description=f"done: {event.kept} kept, {event.dead} dead")
        assert folder is not None
        return folder.finish(complete=True)
    except KeyboardInterrupt:
        stream.cancel()
        kept = len(folder.manifest["filters"]) if folder else 0
        if folder:
            folder.finish(complete=False)
        console.print(
            f"interrupted: cancelled the stream; kept the {kept} finished filter(s) "
            f"in {out} (complete: false)"
        )
        sys.exit(130)
    except FiltercastError as error:
        if folder:
            folder.finish(complete=False)
        raise rpc_failure(error) from error
    finally:
        client.close()


def manifest_fields(accepted: Accepted, connection: Connection) -> dict[str, Any]:
    """The manifest's header from the server's Accepted event."""
    p = accepted.params
    return manifest.header(
        model=p["model"],
        layer=p["layer"],
        preset=p["preset"],
        precision=p["precision"],
        seed=accepted.seed,
        params=p,
        weights_source=accepted.weights_source,
        weights_sha256=accepted.weights_sha256,
        device=accepted.device,
        requested=accepted.filters,
        request_id=accepted.request_id,
        servers=connection.servers,
    )


def report(written: dict[str, Any], out: Path) -> None:
    """One line on stdout: what was written where."""
    kept = sum(1 for f in written["filters"] if not f["dead"])
    grid = written["grid"]
    grid_text = f"a {grid['n']}x{grid['n']} grid" if grid else "no grid (no live filter)"
    click.echo(
        f"wrote {kept} filter PNGs, {grid_text} and manifest.json to {out} "
        f"(seed {written['seed']}, {written['precision']}, {written['seconds']}s)"
    )


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
    return function


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
) -> dict[str, Any]:
    """Keyword arguments of Client.visualize from the CLI options."""
    return {
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


@main.command()
@connection_options
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("visualize-output"), show_default=True
)
@request_options
def visualize(connection: Connection, out: Path, timeout: float | None, **options: Any) -> None:
    """Stream a layer's filters from a server into PNGs, grid.png and manifest.json."""
    manifest = visualize_into(connection, out, timeout, **request_of(**options))
    report(manifest, out)


@main.command()
@click.option(
    "--server", "servers", multiple=True, help="Use this server instead of starting a local one."
)
@click.option("--weights", default=default_weights, show_default="imagenet", help=WEIGHTS_HELP)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("demo-output"), show_default=True
)
@click.option("--filters", default="0:64", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--open",
    "serve_gallery",
    is_flag=True,
    help="Then serve the pictures in the browser gallery until Ctrl-C.",
)
@click.option(
    "--http-port", type=int, default=0, help="The gallery's port with --open (0: a free one)."
)
def demo(
    servers: tuple[str, ...],
    weights: str,
    out: Path,
    filters: str,
    seed: int,
    serve_gallery: bool,
    http_port: int,
) -> None:
    """Start a local server, render the classic block5_conv1 grid, stop the server.

    Pictures are kept in the server's result cache: a second demo is served from it.
    """
    from filtercast_client.local_server import LocalServer

    request = request_of("classic", "vgg16", "block5_conv1", filters, "auto", seed, None, None)
    if servers:
        if serve_gallery or http_port:
            raise click.UsageError("--open and --http-port start a local server: not with --server")
        report(visualize_into(Connection(list(servers)), out, None, **request), out)
        return
    if http_port and not serve_gallery:
        raise click.UsageError("--http-port is the gallery's port: it goes with --open")
    log_path = Path(tempfile.gettempdir()) / "filtercast-demo-server.log"
    console.print(f"starting a local server (weights: {weights}; log: {log_path})")
    try:
        server = LocalServer(
            "--weights",
            weights,
            log_path=log_path,
            metrics=False,
            http_port=http_port if serve_gallery else None,
        )
    except FileNotFoundError as error:
        raise click.ClickException(f"cannot start the server: {error}") from error
    try:
        server.wait_serving()
        report(visualize_into(Connection([server.address]), out, None, **request), out)
        click.echo(f"open {out / 'grid.png'}")
        if not serve_gallery:
            click.echo("see them in a browser: filtercast demo --open (serves the gallery)")
            return
        query = urllib.parse.urlencode(
            {"model": "vgg16", "layer": "block5_conv1", "preset": "classic"}
            | {"filters": filters, "seed": seed}
        )
        url = f"{server.http_url}/?{query}"
        click.echo(f"gallery: {url}  (Ctrl-C stops it)")
        if (
            sys.platform != "linux"
            or os.environ.get("DISPLAY")
            or os.environ.get("WAYLAND_DISPLAY")
        ):
            webbrowser.open(url)  # without a desktop it would start a text browser here
        # SIGTERM (a service manager, `kill`) stops it like Ctrl-C: the server goes too.
        signal.signal(signal.SIGTERM, stop_on_signal)
        signal.signal(signal.SIGINT, stop_on_signal)  # also when started with SIGINT ignored
        try:
            while server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            click.echo("stopped the gallery")
            return
        raise click.ClickException(
            f"the server stopped ({server.process.returncode}); see {log_path}"
        )
    except (RuntimeError, TimeoutError) as error:
        raise click.ClickException(str(error)) from error
    finally:
        server.stop()


def stop_on_signal(signum: int, frame: object) -> None:
    """A signal handler that stops the gallery as Ctrl-C does."""
    raise KeyboardInterrupt


@main.command()
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("render-output"), show_default=True
)
@click.option("--weights", default=default_weights, show_default="imagenet", help=WEIGHTS_HELP)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True
)
@click.option("--max-batch", type=int, default=64, show_default=True)
@click.option("--step-size", type=float, help="Override the preset's step size.")
@request_options
def render(
    out: Path,
    weights: str,
    device: str,
    max_batch: int,
    step_size: float | None,
    timeout: float | None,
    **options: Any,
) -> None:
    """Render filters locally, without a server (needs the `server` extra)."""
    try:
        from filtercast_server.errors import InvalidRequestError, ModelLoadError
        from filtercast_server.render import render as run_render
    except ImportError as error:
        raise click.ClickException(
            f"render needs the server extra ({error}); pip install 'filtercast[server]'"
        ) from error
    request = request_of(**options)
    overrides = dict(request["overrides"])
    named = {"size": request["size"], "steps": request["steps"], "step_size": step_size}
    for name, value in named.items():
        if value is not None:
            if name in overrides:
                raise click.UsageError(
                    f"{name} given twice (as --{name.replace('_', '-')} and --set)"
                )
            overrides[name] = value

    def progress(outcome: Any, done: int, total: int) -> None:
        state = "dead" if outcome.dead else f"loss {outcome.loss:10.2f}"
        console.print(
            f"[{done:4d}/{total}] filter {outcome.index:4d}  {state}  {outcome.seconds:6.2f}s"
        )

    try:
        manifest = run_render(
            out,
            weights=weights,
            preset=request["preset"],
            model=request["model"] or None,
            layer=request["layer"] or None,
            filters=request["filters"],
            precision=request["precision"],
            seed=request["seed"],
            overrides=overrides,
            device=device,
            max_batch=max_batch,
            progress=progress,
        )
    except (InvalidRequestError, ModelLoadError) as error:
        raise click.ClickException(str(error)) from error
    except KeyboardInterrupt:
        console.print(f"interrupted: kept the finished filters in {out} (complete: false)")
        sys.exit(130)
    report(manifest, out)
