"""`filtercast analyze IMAGE`: which channels of a layer an image excites, and where."""

import json
from pathlib import Path

import click
from PIL import Image
from rich.console import Console
from rich.table import Table

from filtercast.contract import ContractError
from filtercast_client.cli_options import Connection, connection_options, rpc_failure
from filtercast_client.errors import FiltercastError


def channel_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int]:
    """--channels 3,17,40 as integers (a usage error otherwise)."""
    try:
        return [int(c) for c in value.split(",")] if value else []
    except ValueError:
        raise click.BadParameter("channels are comma-separated integers, e.g. 3,17,40") from None


@click.command()
@connection_options
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", default="", help="A served model (default: the server's first).")
@click.option("--layer", default="", help="An (H, W, C) layer (default: the model's default).")
@click.option("--size", type=int, help="The side the network sees (default 224).")
@click.option("--top-k", type=int, help="Channels ranked by mean activation (default 8).")
@click.option("--channels", callback=channel_list, help="Channels to map as well: 3,17,40.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("analyze-output"), show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print the response as JSON instead.")
def analyze(
    connection: Connection,
    image: Path,
    model: str,
    layer: str,
    size: int | None,
    top_k: int | None,
    channels: list[int],
    out: Path,
    as_json: bool,
) -> None:
    """The top channels of a layer on IMAGE (PNG or JPEG), with a heatmap of each."""
    try:
        with connection.client() as client:
            found = client.analyze(
                image, model=model, layer=layer, size=size, top_k=top_k, channels=channels
            )
    except ContractError as error:
        raise click.UsageError(str(error)) from error
    except FiltercastError as error:
        raise rpc_failure(error) from error
    if as_json:
        click.echo(json.dumps(found.to_json(), indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(found.seen.squeeze()).save(out / "seen.png")
    table = Table("rank", "channel", "mean", "share", "max", "peak (y, x)", "heatmap")
    ranked = [(str(rank), c) for rank, c in enumerate(found.top, 1)]
    for rank, channel in ranked + [("named", c) for c in found.named]:
        path = out / f"heatmap_{channel.channel:04d}.png"
        Image.fromarray(channel.heatmap).save(path)
        table.add_row(
            rank,
            str(channel.channel),
            f"{channel.mean:.3f}",
            f"{channel.share:.2%}",
            f"{channel.max:.3f}",
            str(channel.peak),
            path.name,
        )
    console = Console()
    console.print(
        f"{found.model}/{found.layer}: {found.seen.shape[0]} px seen, {found.preprocessing} "
        f"preprocessing, a {found.map_shape[0]}x{found.map_shape[1]} map of "
        f"{found.channel_count} channels"
    )
    console.print(table)
    console.print(f"seen image and heatmaps in {out}/")
