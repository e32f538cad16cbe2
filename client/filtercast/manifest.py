"""The output folder format shared by `filtercast render` and `filtercast visualize`.

One PNG per live filter, ``grid.png`` and ``manifest.json``::

    {"model", "layer", "preset", "precision", "seed", "params": {...},
     "weights": {"source", "sha256"}, "device", "requested": [...],
     "request_id" (null for render), "servers" ([] for render),
     "complete": bool, "seconds",
     "filters": [{"index", "loss", "dead", "steps", "seconds", "revived", "cached", "file"}],
     "grid": {"file", "n", "margin", "order"} | null}

A run writes only its own files: the files of this format an earlier run
left in the folder (filter PNGs, grid, manifest) are removed when it starts,
anything else is left alone. Every file is written to a temporary name and
renamed, and the temporary is removed if writing is interrupted (Ctrl-C), so
the folder never holds half a file; the manifest is rewritten as results
arrive, so an interrupted run leaves a valid one with ``complete: false``.
"""

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MANIFEST = "manifest.json"
GRID = "grid.png"
# The files this format owns, including temporaries of an interrupted writer.
OWNED = re.compile(r"^(filter_\d{4,}\.png|grid\.png|manifest\.json)(\.\d+\.tmp)?$")


def filter_filename(index: int) -> str:
    """File name of one filter's picture."""
    return f"filter_{index:04d}.png"


def header(
    *,
    model: str,
    layer: str,
    preset: str,
    precision: str,
    seed: int,
    params: dict[str, Any],
    weights_source: str,
    weights_sha256: str,
    device: str,
    requested: list[int],
    request_id: str | None = None,
    servers: list[str] | None = None,
) -> dict[str, Any]:
    """The manifest's fields known before the first filter; render and visualize both use it."""
    return {
        "model": model,
        "layer": layer,
        "preset": preset,
        "precision": precision,
        "seed": seed,
        "params": params,
        "weights": {"source": weights_source, "sha256": weights_sha256},
        "device": device,
        "requested": requested,
        "request_id": request_id,
        "servers": list(servers or []),
    }


def _write_atomically(path: Path, write: Any) -> None:
    """Call write(temporary path), then rename it to `path`; never leave the temporary."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt included: no temporary stays behind
        tmp.unlink(missing_ok=True)
        raise


def save_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) or (H, W, 1) image as an RGB or grayscale PNG, atomically."""
    flat = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    _write_atomically(path, lambda tmp: Image.fromarray(flat).save(tmp, format="PNG"))


class OutputFolder:
    """Writes filter PNGs, the grid and manifest.json into one folder."""

    def __init__(self, directory: Path, fields: dict[str, Any]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.iterdir():
            if OWNED.match(stale.name) and stale.is_file():
                stale.unlink()
        self.started = time.perf_counter()
        self.manifest: dict[str, Any] = {**fields, "complete": False, "filters": [], "grid": None}
        self.write_manifest()

    def add_filter(
        self,
        index: int,
        loss: float,
        dead: bool,
        steps: int,
        seconds: float,
        image: np.ndarray | None,
        revived: int = 0,
        cached: bool = False,
        objective: str = "",
        member: int = 0,
    ) -> None:
        """Record one filter (and save its picture when it has one).

        `revived`: restarts from fresh noise before it came alive (revive);
        `cached`: the server served it from its result cache; `objective`
        what the picture maximizes and `member` its place in its diversity
        group or interpolation (recorded only for objectives).
        """
        record: dict[str, Any] = {
            "index": index,
            "loss": loss,
            "dead": dead,
            "steps": steps,
            "seconds": round(seconds, 4),
            "revived": revived,
            "cached": cached,
            "file": None,
        }
        if objective:
            record.update(objective=objective, member=member)
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
        text = json.dumps(self.manifest, indent=2) + "\n"
        _write_atomically(self.directory / MANIFEST, lambda tmp: tmp.write_text(text))
