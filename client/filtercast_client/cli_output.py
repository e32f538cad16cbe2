"""The command line's output: a stream written into a folder, behind a progress bar."""

import sys
from pathlib import Path
from typing import Any

import click
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
from filtercast_client.errors import FiltercastError
from filtercast_client.events import Accepted, FilterImage, GridImage, Summary

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


def visualize_into(
    connection: Connection, out: Path, timeout: float | None, **request: Any
) -> dict[str, Any]:
    """Stream one request into `out` with a progress bar; the manifest written.

    Ctrl-C cancels the stream, keeps what arrived and exits 130.
    """
    client = connection.client()
    try:
        stream = client.visualize(timeout=timeout, **request)
    except FiltercastError as error:
        client.close()
        raise rpc_failure(error) from error
    recorder = Recorder(out, connection)
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

    def __init__(self, out: Path, connection: Connection) -> None:
        self.out = out
        self.connection = connection
        self.folder: manifest.OutputFolder | None = None

    def record(self, event: Any, progress: Progress, task: TaskID) -> None:
        """Write one event; move the bar."""
        if isinstance(event, Accepted):
            self.folder = manifest.OutputFolder(self.out, manifest_fields(event, self.connection))
            progress.update(
                task,
                total=len(event.filters),
                description=f"{event.params['layer']} (seed {event.seed})",
            )
        elif isinstance(event, FilterImage):
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
