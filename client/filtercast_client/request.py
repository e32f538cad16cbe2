"""The VisualizeFiltersRequest a client sends, checked against the contract before it goes."""

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from filtercast import contract
from filtercast.contract import ContractError
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.analysis import ImageInput, image_bytes
from filtercast_client.errors import InvalidRequest


def build_request(
    *,
    model: str = "",
    layer: str = "",
    filters: str | Sequence[int] | None = None,
    preset: str = "classic",
    size: int | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int | None = None,
    precision: str = "auto",
    image_format: str = "png",
    grid: bool = True,
    grid_n: int | None = None,
    grid_margin: int | None = None,
    keep_dead_filters: bool = False,
    objectives: Sequence[str | pb.Objective] = (),
    diversity: int = 0,
    diversity_weight: float | None = None,
    diversity_layer: str = "",
    interpolate: str | pb.Interpolation | None = None,
    frames: int = 8,
    image: ImageInput | None = None,
    pull: float | None = None,
    pull_space: str = "pixels",
    preview_every: int = 0,
) -> pb.VisualizeFiltersRequest:
    """A VisualizeFiltersRequest (see Client.visualize); InvalidRequest names a bad argument."""
    try:
        request = pb.VisualizeFiltersRequest(
            model=model,
            layer=layer,
            preset=contract.lookup("preset", contract.PRESETS, preset),
            precision=contract.lookup("precision", contract.PRECISIONS, precision),
            image_format=contract.lookup("image_format", contract.IMAGE_FORMATS, image_format),
            keep_dead_filters=keep_dead_filters,
        )
        _select(request, filters)
        _objectives(request, objectives, interpolate, frames)
        if diversity or diversity_weight is not None or diversity_layer:
            _diversity(request.diversity, diversity, diversity_weight, diversity_layer)
        if image is not None:
            _accentuate(request.accentuate, image, pull, pull_space)
        elif pull is not None:
            raise ContractError("pull is the weight towards a start image: give image too", "pull")
    except ContractError as error:
        raise InvalidRequest(
            grpc.StatusCode.INVALID_ARGUMENT, str(error), field=error.field
        ) from error
    named = {"size": size, "steps": steps, "step_size": step_size}
    _override(request, {n: v for n, v in named.items() if v is not None}, overrides or {})
    for name, value in (("seed", seed), ("preview_every", preview_every or None)):
        if value is not None:
            _set(name, functools.partial(setattr, request, name, value))
    _grid(request.grid, grid, grid_n, grid_margin)
    return request


def _grid(message: pb.GridOptions, grid: bool, n: int | None, margin: int | None) -> None:
    """The grid at the end of the stream: whether, its side and margin (None: the preset's)."""
    message.disabled = not grid
    if n is not None:
        _set("grid.n", functools.partial(setattr, message, "n", n))
    if margin is not None:
        _set("grid.margin", functools.partial(setattr, message, "margin", margin))


def _select(request: pb.VisualizeFiltersRequest, filters: str | Sequence[int] | None) -> None:
    """The request's filters: a spec ("0:64", "1,5,9") or a list of indices."""
    if isinstance(filters, str):
        request.filters.CopyFrom(contract.selection_message(contract.parse_filter_spec(filters)))
    elif filters is not None:
        _set("filters", lambda: request.filters.list.indices.extend(int(i) for i in filters))


def _objectives(
    request: pb.VisualizeFiltersRequest,
    objectives: Sequence[str | pb.Objective],
    interpolate: str | pb.Interpolation | None,
    frames: int,
) -> None:
    """The request's objectives and interpolation, parsed here (filtercast.contract's grammar)."""
    if isinstance(objectives, str | pb.Objective):
        objectives = [objectives]
    for objective in objectives:
        parsed = objective if isinstance(objective, pb.Objective) else None
        request.objectives.append(parsed or contract.parse_objective(str(objective), load_vector))
    if isinstance(interpolate, pb.Interpolation):
        request.interpolation.CopyFrom(interpolate)
    elif interpolate is not None:
        request.interpolation.CopyFrom(
            contract.parse_interpolation(interpolate, frames, load_vector)
        )


def _diversity(message: pb.Diversity, k: int, weight: float | None, layer: str) -> None:
    """The request's diversity: k pictures of each objective (0: none)."""
    _set("diversity.k", functools.partial(setattr, message, "k", k))
    message.layer = layer
    if weight is not None:
        _set("diversity.weight", functools.partial(setattr, message, "weight", weight))


def _accentuate(
    message: pb.Accentuation, image: ImageInput, pull: float | None, space: str
) -> None:
    """Start every picture from `image`, pulled towards it with `pull` in `space`."""
    message.image = image_bytes(image)
    message.pull_space = contract.lookup("pull_space", contract.PULL_SPACES, space)
    if pull is not None:
        _set("accentuate.pull", functools.partial(setattr, message, "pull", pull))


def load_vector(path: str) -> list[float]:
    """A direction's values from a .npy file of one vector (never a pickle)."""
    try:
        values = np.load(Path(path).expanduser(), allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ContractError(
            f"cannot read direction file {path!r}: {error}", "objectives"
        ) from error
    if values.ndim != 1 or values.dtype.kind not in "fiu":
        raise ContractError(
            f"direction file {path!r} holds a {values.dtype} array of shape {values.shape}; "
            "save one vector of numbers (np.save(path, vector))",
            "objectives",
        )
    return [float(v) for v in values]


def _override(
    request: pb.VisualizeFiltersRequest, given: dict[str, Any], overrides: Mapping[str, Any]
) -> None:
    """Set the named arguments `given` and `overrides` in the request's Overrides, once each."""
    for name, value in {**dict(overrides), **given}.items():
        if name in given and name in overrides:
            raise InvalidRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{name} given twice (as {name}= and in overrides)",
                field=f"overrides.{name}",
            )
        if name not in pb.Overrides.DESCRIPTOR.fields_by_name:
            valid = ", ".join(pb.Overrides.DESCRIPTOR.fields_by_name)
            raise InvalidRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown override {name!r}; valid: {valid}",
                field="overrides",
            )
        _set(f"overrides.{name}", functools.partial(setattr, request.overrides, name, value))


def _set(field: str, assign: Callable[[], None]) -> None:
    """Run one field assignment; a value protobuf rejects is InvalidRequest naming the field."""
    try:
        assign()
    except (ValueError, TypeError) as error:  # out of int32/uint64 range, or not a number
        raise InvalidRequest(
            grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {error}", field=field
        ) from error
