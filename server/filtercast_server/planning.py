"""Turning a request into a validated :class:`Plan` before any work starts.

Everything proportional to a request's size is checked arithmetically first
(filters, pixels, steps, cost); the model is only asked questions (its
layers, their sizes), so planning imports no TensorFlow.
"""

import dataclasses
import secrets
from typing import TYPE_CHECKING, Any

from filtercast_server.errors import InvalidRequestError, UnknownModelError, quoted
from filtercast_server.jobs import Plan, Precision
from filtercast_server.overrides import resolve
from filtercast_server.params import AscentParams, Limits
from filtercast_server.selection import FilterSelection, select_filters

if TYPE_CHECKING:  # models import TensorFlow; planning only asks them questions
    from filtercast_server.engine.models import LoadedModel


class OverBudgetError(InvalidRequestError):
    """The request would cost more than the per-request compute budget."""


def make_plan(
    models: "dict[str, LoadedModel]",
    *,
    preset: str = "classic",
    overrides: dict[str, Any] | None = None,
    filters: FilterSelection = None,
    precision: Precision | str = Precision.AUTO,
    seed: int | None = None,
    limits: Limits | None = None,
) -> Plan:
    """Resolve preset + overrides, check model, layer, filters, sizes and cost.

    A request naming no layer gets its model's default layer; AUTO precision
    what the model's device prefers (see Device.resolve). Raises
    InvalidRequestError (UnknownModelError, OverBudgetError) with a message
    that says what is valid. A missing seed is drawn at random and kept in
    the plan, so the result can be reproduced.
    """
    limits = limits or Limits()
    overrides = dict(overrides or {})
    recipe = resolve(preset, overrides, limits)
    params = recipe.params
    if params.model not in models:
        raise UnknownModelError(
            f"model {quoted(params.model)} is not served here; served models: "
            + ", ".join(sorted(models)),
            params.model,
        )
    model = models[params.model]
    if "layer" not in overrides:  # the built-ins' defaults are their presets' layers
        params = dataclasses.replace(params, layer=model.default_layer)
    channels = model.layer(params.layer).channels
    model.check_objective(params.layer, params.objective)
    indices = select_filters(filters, channels, recipe.default_filters, limits.max_filters)
    if not indices:
        raise InvalidRequestError("no filters requested", "filters")
    _check_input_size(model, params, limits)
    _check_cost(params, len(indices), limits)
    return Plan(
        params=params,
        grid=recipe.grid,
        precision=_precision(model, precision),
        filters=tuple(indices),
        seed=_seed(seed),
    )


def _check_input_size(model: "LoadedModel", params: AscentParams, limits: Limits) -> None:
    """The sizes the network sees fit the model's input and reach the layer's border."""
    seen = {params.view_size(size) for size in params.round_sizes()}
    if model.input_size is not None and seen != {model.input_size}:
        raise InvalidRequestError(
            f"model {params.model} was built for {model.input_size} px inputs only; use size="
            f"{model.input_size - 2 * params.pad}"
            + (f" (with pad={params.pad}: the network sees size + 2 x pad)" if params.pad else "")
            + (" and no upscaling rounds" if params.upscale_rounds else ""),
            "size",
        )
    smallest = params.view_size(params.round_sizes()[0])  # what the network sees first
    needed = model.smallest_input(params.layer, params.border)
    if needed > limits.max_size:
        widest = min(model.output_size(params.layer, limits.max_size))
        raise InvalidRequestError(
            f"{params.layer} with border {params.border} needs inputs of at least {needed} px, "
            f"above this server's {limits.max_size} px; use border <= {max(0, (widest - 1) // 2)}",
            "border",
        )
    if smallest < needed:
        first = "size" if params.upscale_rounds == 0 else "the first upscaling round's size"
        first += " + 2 x pad" if params.pad else ""
        raise InvalidRequestError(
            f"{params.layer} with border {params.border} needs inputs of at least {needed} px; "
            f"{first} is {smallest} px. Use size >= {needed - 2 * params.pad}"
            + (", or fewer upscaling rounds" if params.upscale_rounds else ""),
            "size",
        )


def _check_cost(params: AscentParams, filters: int, limits: Limits) -> None:
    per_filter = params.pixel_steps()
    cost = filters * per_filter
    if cost > limits.max_cost:
        raise OverBudgetError(
            f"this request costs {cost:.3g} pixel-steps ({filters} filters x "
            f"{per_filter:.3g} pixels x steps over all rounds), above this server's limit of "
            f"{limits.max_cost:.3g}; ask for at most {max(0, limits.max_cost // per_filter)} "
            "filters, a smaller size or fewer steps",
            "filters",
        )


def _precision(model: "LoadedModel", precision: Precision | str) -> Precision:
    try:
        return model.resolve_precision(precision)
    except ValueError as error:
        if isinstance(error, InvalidRequestError):
            raise
        raise InvalidRequestError(
            f"unknown precision {quoted(str(precision))}; valid: "
            + ", ".join(p.value for p in Precision),
            "precision",
        ) from error


def _seed(seed: int | None) -> int:
    if seed is None:
        return secrets.randbits(31)
    if not 0 <= seed < 2**63:
        raise InvalidRequestError(f"seed must be in 0..2^63-1, got {seed}", "seed")
    return seed
