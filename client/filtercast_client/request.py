"""The VisualizeFiltersRequest a client sends, checked against the contract before it goes."""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from filtercast import contract
from filtercast.contract import ContractError
from filtercast.v1 import filtercast_pb2 as pb
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
    except ContractError as error:
        raise InvalidRequest(
            grpc.StatusCode.INVALID_ARGUMENT, str(error), field=error.field
        ) from error
    named = {"size": size, "steps": steps, "step_size": step_size}
    _override(
        request,
        {name: value for name, value in named.items() if value is not None},
        overrides or {},
    )
    if seed is not None:
        _set("seed", functools.partial(setattr, request, "seed", seed))
    request.grid.disabled = not grid
    if grid_n is not None:
        _set("grid.n", functools.partial(setattr, request.grid, "n", grid_n))
    if grid_margin is not None:
        _set("grid.margin", functools.partial(setattr, request.grid, "margin", grid_margin))
    return request


def _select(request: pb.VisualizeFiltersRequest, filters: str | Sequence[int] | None) -> None:
    """The request's filters: a spec ("0:64", "1,5,9") or a list of indices."""
    if isinstance(filters, str):
        request.filters.CopyFrom(contract.selection_message(contract.parse_filter_spec(filters)))
    elif filters is not None:
        _set("filters", lambda: request.filters.list.indices.extend(int(i) for i in filters))


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
