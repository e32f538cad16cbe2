"""Local rendering without a server: ``filtercast render``.

Loads one model, runs a plan through the engine and writes one PNG per live
filter, ``grid.png`` and ``manifest.json`` (see filtercast.manifest).
An interrupted run keeps what it finished and says ``complete: false``.
With a dataset folder it then ranks the folder's images for each filter (the
server's index, built in a row here) and hands the examples to `on_examples`.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from filtercast import manifest
from filtercast.grid import build_grid
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.accentuation import accentuate_of
from filtercast_server.datasets import Dataset, DatasetImage
from filtercast_server.engine.analysis import LayerMaps
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import Device, select_device
from filtercast_server.engine.models import LoadedModel
from filtercast_server.errors import InvalidRequestError
from filtercast_server.examples import (
    DEFAULT_TOP_K,
    Crop,
    ExampleIndex,
    ExamplesPlan,
    crops_of,
    plan_examples,
)
from filtercast_server.indexing import IndexBuilder, build_index, seen_image
from filtercast_server.jobs import FilterOutcome, Plan
from filtercast_server.model_registry import ModelConfig, parse_model_flag
from filtercast_server.objectives import objectives_of
from filtercast_server.overrides import resolve
from filtercast_server.params import Limits
from filtercast_server.planning import make_plan

Progress = Callable[[FilterOutcome, int, int], None]
# The index a dataset gave, and each rendered filter's examples in it.
ExamplesSink = Callable[[ExampleIndex, dict[int, list[Crop]]], None]


def manifest_fields(plan: Plan, preset: str, device: Device, model: LoadedModel) -> dict[str, Any]:
    """What the manifest says before any filter is done (as `visualize` writes it)."""
    return manifest.header(
        model=plan.params.model,
        layer=plan.params.layer,
        preset=preset,
        precision=plan.precision.value,
        seed=plan.seed,
        params={
            **plan.params.to_dict(),
            **plan.grid.to_dict(),
            **(plan.start.fields() if plan.start else {}),
        },
        weights_source=model.weights_source,
        weights_sha256=model.weights_sha256,
        device=device.description,
        requested=list(plan.filters),
    )


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
    request: pb.VisualizeFiltersRequest | None = None,
    examples: "LocalExamples | None" = None,
) -> dict[str, Any]:
    """Render a plan into `out`; returns the manifest written there.

    `model` is a built-in's name or NAME=PATH of a model file; `request` a
    request message whose objectives, diversity, interpolation and start
    image (accentuate) are used; `examples` a folder whose images that excite
    each filter most are found once the pictures are written.
    """
    config, overrides = _named(model, layer, overrides)
    # Check what needs no model before the slow load; make_plan checks the rest.
    model_name = resolve(preset, overrides, Limits()).params.model
    request = request or pb.VisualizeFiltersRequest()
    wanted, diversity, interpolation = objectives_of(request)
    if examples is not None and (wanted or interpolation):
        raise InvalidRequestError("a dataset shows the examples of filters; give no objective")
    accentuate = accentuate_of(request)
    chosen_device = select_device(device)
    loaded = LoadedModel(model_name, weights, chosen_device, config=config)
    models = {model_name: loaded}
    plan = make_plan(
        models,
        preset=preset,
        overrides=overrides,
        filters=filters,
        precision=precision,
        seed=seed,
        objectives=wanted,
        diversity=diversity,
        interpolation=interpolation,
        accentuate=accentuate,
    )
    chosen = examples.checked(models, plan) if examples else None  # refused before rendering
    engine = AscentEngine(models, max_batch=max_batch)
    folder = manifest.OutputFolder(out, manifest_fields(plan, preset, chosen_device, loaded))
    complete = False
    try:
        _write(folder, engine, plan, progress)
        complete = True
    finally:
        written = folder.finish(complete)
    if examples is not None and chosen is not None:
        examples.deliver(*dataset_examples(models, *chosen))
    return written


@dataclass(frozen=True)
class LocalExamples:
    """A render's dataset: its folder, examples per filter, and who takes them."""

    folder: Path
    deliver: ExamplesSink
    top_k: int = DEFAULT_TOP_K

    def checked(self, models: dict[str, LoadedModel], plan: Plan) -> tuple[Dataset, ExamplesPlan]:
        """The folder as a dataset and the examples asked of it (InvalidRequestError)."""
        model = plan.params.model
        dataset = Dataset(self.folder.name or "dataset", self.folder)
        datasets = {model: {dataset.name: dataset}}
        layer, filters = plan.params.layer, list(plan.filters)
        return dataset, plan_examples(
            models, datasets, model, layer, dataset.name, filters, self.top_k
        )


def _named(
    model: str | None, layer: str | None, overrides: dict[str, Any] | None
) -> tuple[ModelConfig | None, dict[str, Any]]:
    """The model file's config (NAME=PATH), and the overrides with the model and layer named."""
    overrides = dict(overrides or {})
    config = parse_model_flag(model) if model and "=" in model else None
    if model:
        overrides["model"] = config.name if config else model
    if layer:
        overrides["layer"] = layer
    return config, overrides


def dataset_examples(
    models: dict[str, LoadedModel], dataset: Dataset, wanted: ExamplesPlan
) -> tuple[ExampleIndex, dict[int, list[Crop]]]:
    """The index of `dataset` on the plan's layer, and each filter's best crops."""
    loaded = models[wanted.model]
    with ThreadPoolExecutor(2, thread_name_prefix="filtercast-dataset") as decoder:
        builder = IndexBuilder(wanted, dataset, dataset.list(), loaded, LayerMaps(models), decoder)
        index = build_index(builder)

    def seen(image: DatasetImage) -> np.ndarray:
        return seen_image(dataset.read(image), image.name, wanted.size, loaded.channels)

    return index, {c: crops_of(index, c, wanted.top_k, seen) for c in wanted.channels}


def _write(
    folder: manifest.OutputFolder, engine: AscentEngine, plan: Plan, progress: Progress | None
) -> None:
    """Every picture of `plan` into `folder` as it finishes, then the grid."""
    outcomes: list[FilterOutcome] = []
    for outcome in engine.run(plan):
        outcomes.append(outcome)
        target = plan.target(outcome.index)
        folder.add_filter(
            outcome.index,
            outcome.loss,
            outcome.dead,
            outcome.steps,
            outcome.seconds,
            outcome.image,
            outcome.revived,
            objective=target.objective.text() if plan.targets else "",
            member=target.member,
        )
        if progress:
            progress(outcome, len(outcomes), len(plan.filters))
    grid = build_grid(outcomes, plan.grid)
    if grid is not None:
        folder.set_grid(grid.image, grid.n, grid.margin, grid.order)
