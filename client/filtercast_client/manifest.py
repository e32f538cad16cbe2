"""The output folder format shared by `filtercast render` and `filtercast visualize`.

One PNG per live filter, ``grid.png`` and ``manifest.json``::

    {"model", "layer", "preset", "precision", "seed", "params": {...},
     "complete": bool, "filters": [{"index", "loss", "dead", "steps", "seconds", "file"}],
     "grid": {"file", "n", "margin", "order"} | null, ...}
"""

import json
import os
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


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write manifest.json atomically (a reader never sees half a file)."""
    path = directory / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(directory: Path) -> dict[str, Any]:
    """Load a folder's manifest.json."""
    return json.loads((directory / MANIFEST).read_text())
