"""Turning a request into a validated :class:`Plan` before any work starts."""

import dataclasses
import secrets
from typing import TYPE_CHECKING, Any

from filtercast_server.errors import InvalidRequestError, UnknownModelError, quoted
from filtercast_server.presets import PRESETS, FilterSelection, Limits, resolve, select_filters
from filtercast_server.work import Plan, Precision

if TYPE_CHECKING:  # models import TensorFlow; planning only asks them questions
    from filtercast_server.models import LoadedModel


class OverBudgetError(InvalidRequestError):
    """The request would cost more than the per-request compute budget."""


def resolve_precision(
    model: "LoadedModel", precision: Precision | str, default: Precision | str
) -> Precision:
    """The precision a request runs in (ValueError for an unknown name).

    AUTO is the server's `default` where the model runs it, else what runs best there.
    """
    if Precision(precision) is Precision.AUTO and Precision(default) in model.precisions:
        precision = default
    return model.resolve_precision(precision)


def make_plan(
    models: "dict[str, LoadedModel]",
    preset: str = "classic",
    overrides: dict[str, Any] | None = None,
    filters: FilterSelection = None,
    precision: Precision | str = Precision.AUTO,
    seed: int | None = None,
    limits: Limits | None = None,
    default_precision: Precision | str = Precision.AUTO,
) -> Plan:
    """Resolve preset + overrides, check model, layer, filters, sizes and cost.

    A request naming no layer gets its model's default layer. AUTO precision
    becomes `default_precision` (the server's choice) on models that run it,
    else what runs best there.

    Raises InvalidRequestError (UnknownModelError, OverBudgetError) with a
    message that says what is valid. Nothing proportional to the request's
    size is built before its size is checked. A missing seed is drawn at
    random and kept in the plan, so the result can be reproduced.
    """
    limits = limits or Limits()
    if preset not in PRESETS:
        raise InvalidRequestError(
            f"unknown preset {quoted(preset)}; valid: {', '.join(PRESETS)}", "preset"
        )
    recipe = resolve(preset, dict(overrides or {}), limits)
    params = recipe.params
    if params.model not in models:
        raise UnknownModelError(
            f"model {quoted(params.model)} is not served here; served models: "
            + ", ".join(sorted(models)),
            params.model,
        )
    model = models[params.model]
    if "layer" not in (overrides or {}):  # the built-ins' defaults are their presets' layers
        params = dataclasses.replace(params, layer=model.default_layer)
    channels = model.layer(params.layer).channels
    model.check_objective(params.layer, params.objective)
    indices = select_filters(filters, channels, recipe.default_filters, limits.max_filters)
    if not indices:
        raise InvalidRequestError("no filters requested", "filters")
    seen = {params.view_size(size) for size in params.round_sizes()}  # what the network gets
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
    cost = len(indices) * params.pixel_steps()
    if cost > limits.max_cost:
        per_filter = params.pixel_steps()
        raise OverBudgetError(
            f"this request costs {cost:.3g} pixel-steps ({len(indices)} filters x "
            f"{per_filter:.3g} pixels x steps over all rounds), above this server's limit of "
            f"{limits.max_cost:.3g}; ask for at most {max(0, limits.max_cost // per_filter)} "
            "filters, a smaller size or fewer steps",
            "filters",
        )
    try:
        resolved = resolve_precision(model, precision, default_precision)
    except ValueError as error:
        if isinstance(error, InvalidRequestError):
            raise
        raise InvalidRequestError(
            f"unknown precision {quoted(str(precision))}; valid: "
            + ", ".join(p.value for p in Precision),
            "precision",
        ) from error
    if seed is None:
        seed = secrets.randbits(31)
    elif not 0 <= seed < 2**63:
        raise InvalidRequestError(f"seed must be in 0..2^63-1, got {seed}", "seed")
    return Plan(
        params=params, grid=recipe.grid, precision=resolved, filters=tuple(indices), seed=seed
    )
