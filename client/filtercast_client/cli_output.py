"""The command line's output: a stream written into a folder, behind a progress bar."""

import sys
from pathlib import Path
from typing import Any

import click
from PIL import Image
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from filtercast import manifest
from filtercast_client.cli_options import Connection, rpc_failure
from filtercast_client.client import Visualization
from filtercast_client.errors import FiltercastError
from filtercast_client.events import Accepted, FilterImage, FilterPreview, GridImage, Summary
from filtercast_client.shards import SpreadVisualization

console = Console(stderr=True, soft_wrap=True)


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


class Frames:
    """Previews as files, DIR/filter_NNNN/step_SSSS.png; with `animate` also an animation.

    DIR/filter_NNNN.webp (the previews, then the final picture) is written
    once the filter is done.
    """

    FRAME_MS = 150

    def __init__(self, folder: Path, animate: bool) -> None:
        self.folder = folder
        self.animate = animate
        self._frames: dict[int, list[Image.Image]] = {}

    def preview(self, event: FilterPreview) -> None:
        """Write one frame (and keep it, to animate)."""
        folder = self.folder / f"filter_{event.index:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        event.pil.save(folder / f"step_{event.step:04d}.png")
        if self.animate:
            self._frames.setdefault(event.index, []).append(event.pil)

    def final(self, event: FilterImage) -> None:
        """A filter is done: its animation, when asked for and it has frames and a picture."""
        frames = self._frames.pop(event.index, [])
        if not (self.animate and frames and event.pil is not None):
            return
        last = event.pil.resize(frames[0].size, Image.Resampling.LANCZOS)
        frames[0].save(
            self.folder / f"filter_{event.index:04d}.webp",
            save_all=True,
            append_images=[*frames[1:], last],
            duration=self.FRAME_MS,
            loop=0,
            lossless=True,
        )


def visualize_into(
    connection: Connection,
    out: Path,
    timeout: float | None,
    previews_to: Frames | None = None,
    spread: bool = False,
    **request: Any,
) -> dict[str, Any]:
    """Stream one request into `out` with a progress bar; the manifest written.

    Previews go to `previews_to` when given; `spread` deals the filters over
    every server (Client.spread). Ctrl-C cancels the stream, keeps what arrived
    and exits 130.
    """
    client = connection.client()
    stream: Visualization | SpreadVisualization
    try:
        if spread:
            stream = client.spread(timeout=timeout, **request)
        else:
            stream = client.visualize(timeout=timeout, **request)
    except ValueError as error:
        client.close()
        raise click.UsageError(str(error)) from error
    except FiltercastError as error:
        client.close()
        raise rpc_failure(error) from error
    recorder = Recorder(out, connection, previews_to)
    try:
        with Progress(*progress_columns(), console=console, transient=False) as progress:
            task = progress.add_task("connecting", total=None)
            for event in stream:
                recorder.record(event, progress, task)
        return recorder.finish()
    except KeyboardInterrupt:
        stream.cancel()
        kept = recorder.abandon()
        console.print(
            f"interrupted: cancelled the stream; kept the {kept} finished filter(s) "
            f"in {out} (complete: false)"
        )
        sys.exit(130)
    except FiltercastError as error:
        recorder.abandon()
        raise rpc_failure(error) from error
    finally:
        client.close()


def progress_columns() -> tuple[ProgressColumn, ...]:
    """The progress bar's columns (made anew for each bar)."""
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
    )


class Recorder:
    """Writes a stream's events into an output folder, and shows them on a progress bar."""

    def __init__(self, out: Path, connection: Connection, frames: Frames | None = None) -> None:
        self.out = out
        self.connection = connection
        self.frames = frames
        self.folder: manifest.OutputFolder | None = None
        self.in_flight: set[int] = set()  # filters with previews and no final yet
        self.layer = ""

    def record(self, event: Any, progress: Progress, task: TaskID) -> None:
        """Write one event; move the bar."""
        if isinstance(event, Accepted):
            self.folder = manifest.OutputFolder(self.out, manifest_fields(event, self.connection))
            self.layer = f"{event.params['layer']} (seed {event.seed})"
            progress.update(task, total=len(event.filters), description=self.layer)
        elif isinstance(event, FilterPreview):
            self.in_flight.add(event.index)
            if self.frames is not None:
                self.frames.preview(event)
            description = f"{self.layer}, {len(self.in_flight)} in flight"
            progress.update(task, description=description)
        elif isinstance(event, FilterImage):
            self.in_flight.discard(event.index)
            if self.frames is not None:
                self.frames.final(event)
            assert self.folder is not None  # EventChecker: Accepted comes first
            self.folder.add_filter(
                event.index,
                event.loss,
                event.dead,
                event.steps,
                event.seconds,
                event.image,
                event.revived,
                event.cached,
                event.objective,
                event.member,
            )
            progress.advance(task)
        elif isinstance(event, GridImage):
            assert self.folder is not None
            self.folder.set_grid(event.image, event.n, event.margin, event.order)
        elif isinstance(event, Summary):
            progress.update(task, description=f"done: {event.kept} kept, {event.dead} dead")

    def finish(self) -> dict[str, Any]:
        """The stream ended well: the manifest written, complete."""
        assert self.folder is not None
        return self.folder.finish(complete=True)

    def abandon(self) -> int:
        """The stream ended early: what arrived is kept (complete: false); how many filters."""
        if self.folder is None:
            return 0
        kept = len(self.folder.manifest["filters"])
        self.folder.finish(complete=False)
        return kept


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
