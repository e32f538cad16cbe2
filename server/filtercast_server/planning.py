"""Turning a request into a validated :class:`Plan` before any work starts.

Everything proportional to a request's size is checked arithmetically first
(filters, pixels, steps, cost); the model is only asked questions (its
layers, their sizes), so planning imports no TensorFlow.
"""

import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from filtercast_server.accentuation import Accentuate, StartImage, start_image
from filtercast_server.errors import InvalidRequestError, UnknownModelError, quoted
from filtercast_server.jobs import Plan, Precision
from filtercast_server.objectives import Diversity, Interpolation, Objective, Target
from filtercast_server.overrides import resolve
from filtercast_server.params import AscentParams, Limits
from filtercast_server.selection import FilterSelection, select_filters
from filtercast_server.targets import resolve_targets

if TYPE_CHECKING:  # models import TensorFlow; planning only asks them questions
    from filtercast_server.engine.models import LoadedModel


class OverBudgetError(InvalidRequestError):
    """The request would cost more than the per-request compute budget."""


def served_model(models: "Mapping[str, LoadedModel]", name: str) -> "LoadedModel":
    """The loaded model called `name`, or UnknownModelError listing the served ones."""
    if name not in models:
        raise UnknownModelError(
            f"model {quoted(name)} is not served here; served models: " + ", ".join(sorted(models)),
            name,
        )
    return models[name]


def make_plan(
    models: "dict[str, LoadedModel]",
    *,
    preset: str = "classic",
    overrides: dict[str, Any] | None = None,
    filters: FilterSelection = None,
    precision: Precision | str = Precision.AUTO,
    seed: int | None = None,
    limits: Limits | None = None,
    objectives: Sequence[Objective] = (),
    diversity: Diversity | None = None,
    interpolation: Interpolation | None = None,
    accentuate: Accentuate | None = None,
) -> Plan:
    """Resolve preset + overrides, check model, layer, filters, sizes and cost.

    With `objectives` or an `interpolation` the pictures are targets (see
    targets.py) and `filters` must be None. A request naming no layer gets
    its model's default layer; AUTO precision
    what the model's device prefers (see Device.resolve). With `accentuate`
    every picture starts from its image, pulled towards it. Raises
    InvalidRequestError (UnknownModelError, OverBudgetError) with a message
    that says what is valid. A missing seed is drawn at random and kept in
    the plan, so the result can be reproduced.
    """
    limits = limits or Limits()
    overrides = dict(overrides or {})
    recipe = resolve(preset, overrides, limits)
    params = recipe.params
    model = served_model(models, params.model)
    if "layer" not in overrides:  # the built-ins' defaults are their presets' layers
        params = dataclasses.replace(params, layer=model.default_layer)
    wanted = Wanted(filters, tuple(objectives), diversity, interpolation)
    params, indices, targets = _pictures(model, params, wanted, recipe.default_filters, limits)
    if not indices:
        raise InvalidRequestError("no filters requested", "filters")
    plan = Plan(
        params=params,
        grid=recipe.grid,
        precision=_precision(model, precision),
        filters=tuple(indices),
        seed=_seed(seed),
        targets=targets,
        start=_start(model, params, accentuate),
    )
    for layer in plan.structure.layers:
        if model.dense_layer(layer) is None:
            _check_input_size(model, dataclasses.replace(params, layer=layer), limits)
        elif model.input_size is None:
            raise InvalidRequestError(
                f"dense layer {layer} needs a model with a fixed input size", "objectives"
            )
    _check_cost(params, len(indices), limits)
    return plan


def _start(
    model: "LoadedModel", params: AscentParams, accentuate: Accentuate | None
) -> StartImage | None:
    """The request's start image at its size (InvalidRequestError naming what to change)."""
    if accentuate is None:
        return None
    if params.revive:
        raise InvalidRequestError(
            "revive restarts a dead filter from fresh noise, and an accentuated picture "
            "starts from its image; leave revive at 0 with a start image",
            "revive",
        )
    # Decoded at the last round's size: upscale's later rounds pull towards a sharp image.
    size = params.round_sizes()[-1]
    return start_image(accentuate.image, size, model.channels, accentuate.pull, accentuate.space)


@dataclass(frozen=True)
class Wanted:
    """What a request asks pictures of: filters, or objectives (diversified), or frames."""

    filters: FilterSelection
    objectives: tuple[Objective, ...] = ()
    diversity: Diversity | None = None
    interpolation: Interpolation | None = None


def _pictures(
    model: "LoadedModel",
    params: AscentParams,
    wanted: Wanted,
    default_filters: int | None,
    limits: Limits,
) -> tuple[AscentParams, list[int], tuple[Target, ...]]:
    """(params labelled with the pictures' layer, their indices, their targets if objectives)."""
    if not wanted.objectives and wanted.interpolation is None:
        if wanted.diversity is not None and wanted.diversity.k:
            raise InvalidRequestError("diversity needs objectives to diversify", "diversity")
        channels = model.layer(params.layer).channels
        model.check_objective(params.layer, params.objective)
        indices = select_filters(wanted.filters, channels, default_filters, limits.max_filters)
        return params, indices, ()
    if wanted.filters is not None:
        raise InvalidRequestError(
            "a request names filters or objectives, not both; a filter k of layer L is "
            "the objective L:k",
            "filters",
        )
    targets = resolve_targets(
        model, params, wanted.objectives, wanted.diversity, wanted.interpolation
    )
    if len(targets) > limits.max_filters:
        raise InvalidRequestError(
            f"{len(targets)} pictures requested; at most {limits.max_filters} per request",
            "objectives",
        )
    params = dataclasses.replace(params, layer=targets[0].objective.terms[0].layer)
    return params, list(range(len(targets))), targets


def check_groups_fit(plan: Plan, capacity: int) -> None:
    """Refuse a plan whose groups (diversity, interpolation) exceed a batch of `capacity` rows."""
    grouped = [t.group for t in plan.targets if t.group is not None]
    largest = max((g.size for g in grouped), default=1)
    if largest > capacity:
        side = plan.params.view_size(plan.params.size)
        raise InvalidRequestError(
            f"a group of {largest} pictures must share one batch, and a batch holds "
            f"{capacity} pictures of {side} px here; ask for at most {capacity} "
            "(diversity.k or interpolation.frames), or a smaller size",
            grouped[0].kind,
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
