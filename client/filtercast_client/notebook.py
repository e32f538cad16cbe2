"""Live grids in a notebook: pictures fill in as they arrive, previews animate their tiles.

    from filtercast_client import Client
    from filtercast_client.notebook import show

    client = Client("127.0.0.1:50051")
    found = show(client.visualize(layer="block5_conv1", filters="0:16", preview_every=10))

`show` iterates a stream and keeps one output up to date through an
IPython display handle (`display(..., display_id=True)` and
`handle.update`): plain HTML with the pictures inline as PNG, a progress
bar and, at the end, the summary. Display handles are the one mechanism
JupyterLab, Notebook 7, VS Code and nbclient all render without a front-end
extension (ipywidgets needs its widget manager installed and enabled to
show anything, and draws nothing in a saved or executed notebook); where no
front end listens (a terminal IPython) the last update is what remains.
Updates are throttled to a few a second, so a fast stream does not flood
the front end. `show_async` is the same for an AsyncClient's stream: it
awaits each event, so the kernel's event loop keeps serving other cells'
tasks meanwhile.
"""

import base64
import html
import io
import time
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from IPython.display import HTML, display
from PIL import Image

from filtercast_client.events import (
    Accepted,
    Event,
    FilterImage,
    FilterPreview,
    GridImage,
    Summary,
)

UPDATE_SECONDS = 0.25  # the least time between two updates of the output


@dataclass
class Shown:
    """What a shown stream delivered: every final picture, the grid and the summary."""

    accepted: Accepted | None = None
    filters: dict[int, FilterImage] = field(default_factory=dict)
    grid: GridImage | None = None
    summary: Summary | None = None


class LiveGrid:
    """One notebook output that draws a stream's state (see the module docstring)."""

    def __init__(self, tile_px: int = 96) -> None:
        self.tile_px = tile_px
        self.shown = Shown()
        self._tiles: dict[int, tuple[str, str]] = {}  # index -> (PNG base64, caption)
        self._handle = display(_markup(self._html()), display_id=True)  # type: ignore[no-untyped-call]
        self._drawn = 0.0

    def add(self, event: Event) -> None:
        """Take one event; redraw when enough time has passed (always at the end)."""
        if isinstance(event, Accepted):
            self.shown.accepted = event
        elif isinstance(event, FilterPreview):
            self._tiles[event.index] = (_png(event.pil), f"#{event.index} · step {event.step}")
        elif isinstance(event, FilterImage):
            self.shown.filters[event.index] = event
            picture = event.pil
            caption = f"#{event.index} · " + ("dead" if event.dead else f"{event.loss:.2f}")
            self._tiles[event.index] = (_png(picture) if picture else "", caption)
        elif isinstance(event, GridImage):
            self.shown.grid = event
        elif isinstance(event, Summary):
            self.shown.summary = event
        final = isinstance(event, Summary)
        if final or time.monotonic() - self._drawn >= UPDATE_SECONDS:
            self.draw()

    def draw(self) -> None:
        """Update the output now."""
        self._drawn = time.monotonic()
        if self._handle is not None:
            self._handle.update(_markup(self._html()))

    def _html(self) -> str:
        total = len(self.shown.accepted.filters) if self.shown.accepted else 0
        done = len(self.shown.filters)
        tiles = "".join(
            f'<figure style="margin:2px;width:{self.tile_px}px">'
            + (
                f'<img src="data:image/png;base64,{data}" alt="{html.escape(caption)}" '
                f'style="width:{self.tile_px}px;image-rendering:pixelated">'
                if data
                else f'<div style="width:{self.tile_px}px;height:{self.tile_px}px;'
                'background:#8883"></div>'
            )
            + f'<figcaption style="font-size:11px">{html.escape(caption)}</figcaption></figure>'
            for _, (data, caption) in sorted(self._tiles.items())
        )
        summary = self.shown.summary
        status = (
            f"done: {summary.kept} kept, {summary.dead} dead, {summary.total_seconds:.1f} s"
            if summary
            else f"{done} of {total or '?'} filters"
        )
        return (
            f'<div><progress value="{done}" max="{max(total, 1)}"></progress> '
            f"<span>{html.escape(status)}</span>"
            f'<div style="display:flex;flex-wrap:wrap">{tiles}</div></div>'
        )


def show(stream: Iterable[Event], tile_px: int = 96) -> Shown:
    """Draw `stream` (Client.visualize's) live in the notebook; what it delivered."""
    grid = LiveGrid(tile_px)
    for event in stream:
        grid.add(event)
    grid.draw()
    return grid.shown


async def show_async(stream: AsyncIterable[Event], tile_px: int = 96) -> Shown:
    """Draw AsyncClient.visualize's stream live, awaiting each event (`await` it in a cell)."""
    grid = LiveGrid(tile_px)
    async for event in stream:
        grid.add(event)
    grid.draw()
    return grid.shown


def _markup(text: str) -> HTML:
    # IPython's display classes carry no type hints.
    return HTML(text)  # type: ignore[no-untyped-call]


def _png(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def save_pictures(shown: Shown, folder: str | Path) -> list[str]:
    """Each live picture as filter_NNNN.png in `folder`; the names written."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, event in sorted(shown.filters.items()):
        if event.pil is not None:
            event.pil.save(out / f"filter_{index:04d}.png")
            written.append(f"filter_{index:04d}.png")
    return written
