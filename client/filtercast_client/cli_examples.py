"""`filtercast examples`: the dataset images that excite each channel of a layer most."""

import json
import re
import shutil
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from filtercast.contract import ContractError
from filtercast_client.cli_options import Connection, connection_options, rpc_failure
from filtercast_client.errors import FiltercastError
from filtercast_client.examples import ChannelExamples, DatasetExample, IndexProgress

STRIP_HEIGHT = 96  # each crop of a channel's strip is scaled to this height


def strip(channel: ChannelExamples, gap: int = 4) -> np.ndarray | None:
    """The channel's crops side by side, each scaled to STRIP_HEIGHT, on black (None: none)."""
    crops = []
    for example in channel.examples:
        crop = example.crop if example.crop.shape[-1] == 3 else np.repeat(example.crop, 3, -1)
        height, width = crop.shape[:2]
        scaled_width = max(1, round(width * STRIP_HEIGHT / height))
        image = Image.fromarray(crop).resize((scaled_width, STRIP_HEIGHT), Image.Resampling.LANCZOS)
        crops.append(np.asarray(image))
    if not crops:
        return None
    total = sum(c.shape[1] for c in crops) + gap * (len(crops) - 1)
    canvas = np.zeros((STRIP_HEIGHT, total, 3), np.uint8)
    left = 0
    for crop in crops:
        canvas[:, left : left + crop.shape[1]] = crop
        left += crop.shape[1] + gap
    return canvas


def write_examples(channels: list[ChannelExamples], out: Path) -> None:
    """Each crop as channel_NNNN/RR_<image>.png and each channel's strip as channel_NNNN.png."""
    out.mkdir(parents=True, exist_ok=True)
    for channel in channels:
        folder = out / f"channel_{channel.channel:04d}"
        folder.mkdir(exist_ok=True)
        for rank, example in enumerate(channel.examples, 1):
            # Its own name only, of bounded length: a folder's path never leaves `out`.
            name = re.sub(r"[^\w.-]", "_", example.image.rsplit("/", 1)[-1].rsplit(".", 1)[0])
            name = name[:80]
            Image.fromarray(example.crop.squeeze()).save(folder / f"{rank:02d}_{name}.png")
        pictures = strip(channel)
        if pictures is not None:
            Image.fromarray(pictures).save(out / f"channel_{channel.channel:04d}.png")


def write_local_examples(index: Any, crops: dict[int, list[Any]], out: Path) -> None:
    """What `render --dataset` found (the server package's ExampleIndex and Crops), as files."""
    if out.is_dir():
        shutil.rmtree(out)  # this run's channels only
    channels = [
        ChannelExamples(
            channel,
            [
                DatasetExample(c.image.name, c.image.sha256, c.value, c.position, c.box, c.pixels)
                for c in found
            ],
        )
        for channel, found in crops.items()
    ]
    write_examples(channels, out)
    skipped = sum(index.skipped.values())
    click.echo(f"ranked {index.indexed} dataset images ({skipped} skipped): examples in {out}/")


@click.command()
@connection_options
@click.option("--dataset", required=True, help="A dataset the model has (see `filtercast models`).")
@click.option("--model", default="", help="A served model (default: the server's first).")
@click.option("--layer", default="", help="An (H, W, C) layer (default: the model's default).")
@click.option("--filters", default=None, help="Channels, e.g. 0:16,40 (default: 0:16).")
@click.option("--top-k", type=int, help="Images per channel, best first (default 8, at most 16).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("examples-output"), show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print every event as JSON instead.")
def examples(
    connection: Connection,
    dataset: str,
    model: str,
    layer: str,
    filters: str | None,
    top_k: int | None,
    out: Path,
    as_json: bool,
) -> None:
    """The images of DATASET that excite each channel most, cropped to where they do.

    The first request for a model and layer builds the dataset's index on the
    server (its progress is shown); later ones read it.
    """
    console = Console(stderr=True)
    with console.status("looking the index up") as status:

        def progress(event: IndexProgress) -> None:
            status.update(
                f"index {event.state}: {event.done}/{event.total} images, {event.skipped} skipped"
            )

        try:
            with connection.client() as client:
                found = client.examples(
                    dataset,
                    model=model,
                    layer=layer,
                    filters=filters,
                    top_k=top_k,
                    on_progress=progress,
                )
        except ContractError as error:
            raise click.UsageError(str(error)) from error
        except FiltercastError as error:
            raise rpc_failure(error) from error
    if as_json:
        click.echo(json.dumps(found.to_json(), indent=2))
        return
    write_examples(found.channels, out)
    summary = found.summary
    table = Table("channel", "best images (value)")
    for channel in found.channels:
        best = ", ".join(f"{e.image} ({e.value:.2f})" for e in channel.examples[:4])
        more = len(channel.examples) - 4
        table.add_row(str(channel.channel), best + (f" +{more}" if more > 0 else ""))
    skipped = sum(summary.get("skipped", {}).values())
    source = "stored index" if summary.get("fromStore") else "index built now"
    Console().print(
        f"{summary.get('model')}/{summary.get('layer')} on {summary.get('dataset')}: "
        f"{summary.get('images', 0)} images ranked, {skipped} skipped ({source})"
    )
    Console().print(table)
    Console().print(f"crops and strips in {out}/")
