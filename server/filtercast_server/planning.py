"""Turning a request into a validated :class:`Plan` before any work starts."""

import secrets
from typing import Any

from filtercast_server.ascent import Plan
from filtercast_server.devices import Precision
from filtercast_server.errors import InvalidRequestError, UnknownModelError, quoted
from filtercast_server.models import LoadedModel
from filtercast_server.presets import PRESETS, Limits, parse_filters, resolve, validate_filters


def make_plan(
    models: dict[str, LoadedModel],
    preset: str = "classic",
    overrides: dict[str, Any] | None = None,
    filters: str | list[int] | None = None,
    precision: Precision | str = Precision.AUTO,
    seed: int | None = None,
    limits: Limits | None = None,
) -> Plan:
    """Resolve preset + overrides, check model, layer, filters and sizes.

    Raises InvalidRequestError (or UnknownModelError) with a message that says
    what is valid. A missing seed is drawn at random and kept in the plan, so
    the result can be reproduced.
    """
    limits = limits or Limits()
    if preset not in PRESETS:
        raise InvalidRequestError(f"unknown preset {quoted(preset)}; valid: {', '.join(PRESETS)}")
    params = resolve(preset, dict(overrides or {}), limits)
    if params.model not in models:
        raise UnknownModelError(
            f"model {quoted(params.model)} is not served here; served models: "
            + ", ".join(sorted(models))
        )
    model = models[params.model]
    channels = model.layer(params.layer).channels
    if isinstance(filters, list):
        indices = validate_filters(filters, channels)
    else:
        indices = parse_filters(filters, channels, params.default_filters)
    if not indices:
        raise InvalidRequestError("no filters requested")
    if len(indices) > limits.max_filters:
        raise InvalidRequestError(
            f"{len(indices)} filters requested; at most {limits.max_filters} per request"
        )
    smallest = params.round_sizes()[0]
    height, width = model.output_size(params.layer, smallest)
    if min(height, width) - 2 * params.border < 1:
        raise InvalidRequestError(
            f"a {smallest} px input gives {params.layer} a {height}x{width} output, too small "
            f"for border {params.border}; use a larger size"
        )
    try:
        resolved = model.device.resolve(precision)
    except ValueError as error:
        raise InvalidRequestError(
            f"unknown precision {quoted(str(precision))}; valid: "
            + ", ".join(p.value for p in Precision)
        ) from error
    if seed is None:
        seed = secrets.randbits(31)
    elif not 0 <= seed < 2**63:
        raise InvalidRequestError(f"seed must be in 0..2^63-1, got {seed}")
    return Plan(params=params, precision=resolved, filters=tuple(indices), seed=seed)
