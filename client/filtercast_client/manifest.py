"""The output folder format shared by `filtercast render` and `filtercast visualize`.

One PNG per live filter, ``grid.png`` and ``manifest.json``::

    {"model", "layer", "preset", "precision", "seed", "params": {...},
     "complete": bool, "filters": [{"index", "loss", "dead", "steps", "seconds", "file"}],
     "grid": {"file", "n", "margin", "order"} | null, ...}

The manifest is rewritten atomically as results arrive, so an interrupted
run leaves a valid one with ``complete: false``.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MANIFEST = "manifest.json"
GRID = "grid.png"


def filter_filename(index: int) -> str:
    """File name of one filter's picture."""
    return f"filter_{index:04d}.png"


def save_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) image as PNG, atomically."""
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)


class OutputFolder:
    """Writes filter PNGs, the grid and manifest.json into one folder."""

    def __init__(self, directory: Path, header: dict[str, Any]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        self.manifest: dict[str, Any] = {**header, "complete": False, "filters": [], "grid": None}
        self.write_manifest()

    def add_filter(
        self,
        index: int,
        loss: float,
        dead: bool,
        steps: int,
        seconds: float,
        image: np.ndarray | None,
    ) -> None:
        """Record one filter (and save its picture when it has one)."""
        record = {
            "index": index,
            "loss": loss,
            "dead": dead,
            "steps": steps,
            "seconds": round(seconds, 4),
            "file": None,
        }
        if image is not None:
            record["file"] = filter_filename(index)
            save_png(self.directory / record["file"], image)
        self.manifest["filters"].append(record)
        self.write_manifest()

    def set_grid(self, image: np.ndarray, n: int, margin: int, order: list[int]) -> None:
        """Save grid.png and record its layout."""
        save_png(self.directory / GRID, image)
        self.manifest["grid"] = {"file": GRID, "n": n, "margin": margin, "order": order}

    def finish(self, complete: bool) -> dict[str, Any]:
        """Write the final manifest; `complete` is False for an interrupted run."""
        self.manifest["complete"] = complete
        self.manifest["seconds"] = round(time.perf_counter() - self.started, 3)
        self.write_manifest()
        return self.manifest

    def write_manifest(self) -> None:
        """Rewrite manifest.json atomically (a reader never sees half a file)."""
        path = self.directory / MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2) + "\n")
        os.replace(tmp, path)
