"""The ``filtercast`` command line: models, layers, visualize, analyze, examples, render, serve."""

import functools
import os
import signal
import sys
import tempfile
import time
import urllib.parse
import webbrowser
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from filtercast import contract
from filtercast_client.cli_analyze import analyze
from filtercast_client.cli_examples import examples, write_local_examples
from filtercast_client.cli_options import (
    WEIGHTS_HELP,
    Connection,
    connection_options,
    default_weights,
    objective_options,
    request_of,
    request_options,
    rpc_failure,
)
from filtercast_client.cli_output import Frames, console, report, visualize_into
from filtercast_client.errors import FiltercastError, InvalidRequest
from filtercast_client.request import build_request

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
    datasets = []
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
                if info.datasets:
                    datasets.append(f"{info.name} datasets: {', '.join(info.datasets)}")
    except FiltercastError as error:
        raise rpc_failure(error) from error
    Console().print(table)
    for line in datasets:  # below the table: it stays narrow enough for a terminal
        Console().print(line)


@main.command()
@connection_options
@click.option("--model", default="vgg16", show_default=True)
def layers(connection: Connection, model: str) -> None:
    """List a model's layers: name, type, channels, output stride; then its dense layers."""
    table = Table("layer", "type", "channels", "stride", "dtype")
    try:
        with connection.client() as client:
            described = client.describe(model)
    except FiltercastError as error:
        raise rpc_failure(error) from error
    for layer in described.layers:
        table.add_row(
            layer.name, layer.type, str(layer.channels), str(layer.output_stride), layer.dtype
        )
    Console().print(table)
    if described.dense_layers:  # their units are objectives: --objective NAME:UNIT
        dense = Table("dense layer", "type", "units", "activation")
        for info in described.dense_layers:
            dense.add_row(info.name, info.type, str(info.units), info.activation)
        Console().print(dense)


@main.command()
@connection_options
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("visualize-output"), show_default=True
)
@click.option(
    "--preview-every", type=int, default=0, help="Previews of pictures in flight every N steps."
)
@click.option(
    "--previews",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each preview to DIR/filter_NNNN/step_SSSS.png (previews every 10 steps "
    "unless --preview-every says otherwise).",
)
@click.option("--animate", is_flag=True, help="With --previews: DIR/filter_NNNN.webp per filter.")
@click.option(
    "--spread",
    is_flag=True,
    help="Deal the filters over every server behind --server (each address a dns:/// name "
    "resolves to) and merge them into one stream, one grid.",
)
@request_options
def visualize(
    connection: Connection,
    out: Path,
    preview_every: int,
    previews: Path | None,
    animate: bool,
    spread: bool,
    timeout: float | None,
    **options: Any,
) -> None:
    """Stream a layer's filters from a server into PNGs, grid.png and manifest.json."""
    if animate and previews is None:
        raise click.UsageError("--animate writes into the --previews folder: give --previews DIR")
    writer = Frames(previews, animate) if previews else None
    every = preview_every or (10 if previews else 0)
    request = request_of(**options)
    manifest = visualize_into(
        connection, out, timeout, writer, spread=spread, preview_every=every, **request
    )
    report(manifest, out)


@main.command()
@click.option(
    "--server", "servers", multiple=True, help="Use this server instead of starting a local one."
)
@click.option("--weights", default=default_weights, show_default="imagenet", help=WEIGHTS_HELP)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("demo-output"), show_default=True
)
@click.option(
    "--filters", default=None, help="Default: 0:64 (unless --objective or --interpolate)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--preset",
    type=click.Choice(list(contract.PRESETS), case_sensitive=False),
    default="classic",
    show_default=True,
)
@objective_options
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
    filters: str | None,
    seed: int,
    preset: str,
    serve_gallery: bool,
    http_port: int,
    **objectives: Any,
) -> None:
    """Start a local server, render the classic block5_conv1 grid, stop the server.

    Pictures are kept in the server's result cache: a second demo is served from it.
    """
    from filtercast_client.local_server import LocalServer

    if filters is None and not objectives["objectives"] and not objectives["interpolate"]:
        filters = "0:64"
    request = request_of(
        preset, "vgg16", "block5_conv1", filters, "auto", seed, None, None, **objectives
    )
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
        show_gallery(server, {"filters": filters or "0:64", "seed": seed}, log_path)
    except (RuntimeError, TimeoutError) as error:
        raise click.ClickException(str(error)) from error
    finally:
        server.stop()


def wire_request(request: dict[str, Any]) -> Any:
    """The CLI's objectives, diversity, interpolation and start image as one wire message.

    render resolves the preset, filters and overrides itself.
    """
    try:
        return build_request(
            objectives=request["objectives"],
            diversity=request["diversity"],
            diversity_weight=request["diversity_weight"],
            interpolate=request["interpolate"],
            frames=request["frames"],
            image=request["image"],
            pull=request["pull"],
            pull_space=request["pull_space"],
        )
    except InvalidRequest as error:
        raise click.UsageError(error.message) from error


def show_gallery(server: Any, request: dict[str, Any], log_path: Path) -> None:
    """Point a browser at the demo's pictures in the gallery; serve until Ctrl-C or SIGTERM."""
    query = urllib.parse.urlencode(
        {"model": "vgg16", "layer": "block5_conv1", "preset": "classic"} | request
    )
    url = f"{server.http_url}/?{query}"
    click.echo(f"gallery: {url}  (Ctrl-C stops it)")
    if sys.platform != "linux" or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
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
    raise click.ClickException(f"the server stopped ({server.process.returncode}); see {log_path}")


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
@click.option(
    "--dataset",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder of PNG/JPEG images: each filter's best ones go to OUT/examples/.",
)
@click.option("--dataset-top-k", type=int, default=8, show_default=True)
@request_options
def render(
    out: Path,
    weights: str,
    device: str,
    max_batch: int,
    step_size: float | None,
    dataset: Path | None,
    dataset_top_k: int,
    timeout: float | None,
    **options: Any,
) -> None:
    """Render filters locally, without a server (needs the `server` extra)."""
    try:
        from filtercast_server.engine.render import LocalExamples
        from filtercast_server.engine.render import render as run_render
        from filtercast_server.errors import InvalidRequestError, ModelLoadError
    except ImportError as error:
        raise click.ClickException(
            f"render needs the server extra ({error}); pip install 'filtercast[server]'"
        ) from error
    request = request_of(**options)
    overrides = render_overrides(request, step_size)

    deliver = functools.partial(write_local_examples, out=out / "examples")

    def progress(outcome: Any, done: int, total: int) -> None:
        state = "dead" if outcome.dead else f"loss {outcome.loss:10.2f}"
        what = "picture" if request["objectives"] or request["interpolate"] else "filter"
        console.print(
            f"[{done:4d}/{total}] {what} {outcome.index:4d}  {state}  {outcome.seconds:6.2f}s"
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
            request=wire_request(request),
            device=device,
            max_batch=max_batch,
            progress=progress,
            examples=LocalExamples(dataset, deliver, dataset_top_k) if dataset else None,
        )
    except (InvalidRequestError, ModelLoadError) as error:
        raise click.ClickException(str(error)) from error
    except KeyboardInterrupt:
        console.print(f"interrupted: kept the finished filters in {out} (complete: false)")
        sys.exit(130)
    report(manifest, out)


def render_overrides(request: dict[str, Any], step_size: float | None) -> dict[str, Any]:
    """--set's overrides with --size, --steps and --step-size (a usage error when given twice)."""
    overrides = dict(request["overrides"])
    named = {"size": request["size"], "steps": request["steps"], "step_size": step_size}
    for name, value in named.items():
        if value is not None:
            if name in overrides:
                raise click.UsageError(
                    f"{name} given twice (as --{name.replace('_', '-')} and --set)"
                )
            overrides[name] = value
    return overrides


main.add_command(analyze)
main.add_command(examples)
