"""Local rendering without a server: ``filtercast render``.

Loads one model, runs a plan through the engine and writes one PNG per live
filter, ``grid.png`` and ``manifest.json`` (see filtercast_client.manifest).
An interrupted run keeps what it finished and says ``complete: false``.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filtercast_client.manifest import GRID, filter_filename, save_png, write_manifest

from filtercast_server.ascent import AscentEngine, FilterOutcome, Plan
from filtercast_server.devices import Device, select_device
from filtercast_server.grid import build_grid
from filtercast_server.models import LoadedModel
from filtercast_server.planning import make_plan
from filtercast_server.presets import Limits, resolve

Progress = Callable[[FilterOutcome, int, int], None]


def manifest_for(
    plan: Plan, preset: str, device: Device, model: LoadedModel, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """The manifest's header and filter records (grid and completeness added later)."""
    return {
        "model": plan.params.model,
        "layer": plan.params.layer,
        "preset": preset,
        "precision": plan.precision.value,
        "seed": plan.seed,
        "params": plan.params.to_dict(),
        "weights": {"source": model.weights_source, "sha256": model.weights_sha256},
        "device": device.description,
        "requested": list(plan.filters),
        "complete": False,
        "filters": records,
        "grid": None,
    }


def render(
    out: Path,
    *,
    weights: str,
    preset: str = "classic",
    model: str | None = None,
    layer: str | None = None,
    filters: str | None = None,
    precision: str = "auto",
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    max_batch: int = 64,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Render a plan into `out`; returns the manifest written there."""
    overrides = dict(overrides or {})
    if model:
        overrides["model"] = model
    if layer:
        overrides["layer"] = layer
    # Check what needs no model before the slow load; make_plan checks the rest.
    model_name = resolve(preset, overrides, Limits()).model
    chosen_device = select_device(device)
    loaded = LoadedModel(model_name, weights, chosen_device)
    models = {model_name: loaded}
    plan = make_plan(models, preset, overrides, filters, precision, seed)
    engine = AscentEngine(models, max_batch=max_batch)

    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    manifest = manifest_for(plan, preset, chosen_device, loaded, records)
    outcomes: list[FilterOutcome] = []
    started = time.perf_counter()
    try:
        for outcome in engine.run(plan):
            outcomes.append(outcome)
            record = {
                "index": outcome.index,
                "loss": outcome.loss,
                "dead": outcome.dead,
                "steps": outcome.steps,
                "seconds": round(outcome.seconds, 4),
                "file": None,
            }
            if outcome.image is not None:
                record["file"] = filter_filename(outcome.index)
                save_png(out / record["file"], outcome.image)
            records.append(record)
            if progress:
                progress(outcome, len(records), len(plan.filters))
        grid = build_grid(outcomes, plan.params)
        if grid is not None:
            save_png(out / GRID, grid.image)
            manifest["grid"] = {
                "file": GRID,
                "n": grid.n,
                "margin": grid.margin,
                "order": grid.order,
            }
        manifest["complete"] = True
    finally:
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        write_manifest(out, manifest)
    return manifest
