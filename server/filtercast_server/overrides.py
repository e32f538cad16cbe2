"""A request's overrides applied to its preset, each checked before any work starts.

A request may override any knob that applies to its preset, within the
operator's :class:`Limits`; the result is the frozen recipe for its filters.
"""

import dataclasses
import math
from typing import Any

from filtercast_server.errors import InvalidRequestError, quoted
from filtercast_server.params import AscentParams, GridParams, Limits, Parameterization, Preset
from filtercast_server.presets import preset

GRID_OVERRIDES = {f"grid_{field.name}" for field in dataclasses.fields(GridParams)}
FIXED = {"parameterization"}  # what makes a preset itself: choose another preset instead
OVERRIDABLE = {field.name for field in dataclasses.fields(AscentParams)} - FIXED | GRID_OVERRIDES
# Knobs of one parameterization only: overriding them on the other would change nothing.
ONLY_FOR: dict[Parameterization, set[str]] = {
    "pixels": {
        "gradient_norm",
        "init_offset",
        "upscale_rounds",
        "upscale_factor",
        "deprocess_std",
        "deprocess_eps",
        "revive",
    },
    "fourier": {"pad", "jitter", "scale_jitter", "rotate_degrees"},
}
MAX_REVIVE = 8


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
        raise InvalidRequestError(f"{name}={value} is out of range; valid: {low}..{high}", name)


# The Python types a parameter's value may have (Literal choices are text).
_KINDS: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float)}
_TYPES: dict[str, tuple[type, ...]] = {
    field.name: _KINDS.get(field.type, (str,)) for field in dataclasses.fields(AscentParams)
} | {"grid_n": (int,), "grid_margin": (int,), "grid_order": (str,), "dead_threshold": (int, float)}


def _check_type(name: str, value: Any) -> None:
    """A value of the parameter's kind (an int for sizes and counts, a number for rates...)."""
    if value is None and name in ("dead_threshold", "grid_n"):
        return
    kinds = _TYPES[name]
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = "text" if kinds == (str,) else "an integer" if kinds == (int,) else "a number"
        shown = quoted(value) if isinstance(value, str) else repr(value)[:80]
        raise InvalidRequestError(f"{name} must be {expected}, got {shown}", name)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be finite, got {value!r}", name)


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise InvalidRequestError(
            f"{name} must be one of {', '.join(valid)}, got {quoted(value)}", name
        )


def resolve(name: str, overrides: dict[str, Any], limits: Limits) -> Preset:
    """The preset `name` with `overrides` applied, each validated against `limits`.

    Overrides name AscentParams fields and grid_n, grid_margin, grid_order.
    Model and layer names are checked later against the loaded model; here
    only values that need no model are validated.
    """
    chosen = preset(name)
    _check_names(name, chosen.params.parameterization, overrides)
    for key, value in overrides.items():
        _check_type(key, value)
    grid = dataclasses.replace(
        chosen.grid,
        **{key.removeprefix("grid_"): v for key, v in overrides.items() if key in GRID_OVERRIDES},
    )
    params = dataclasses.replace(
        chosen.params, **{key: v for key, v in overrides.items() if key not in GRID_OVERRIDES}
    )
    _check_image(params, limits)
    _check_view(params, limits)
    _check_grid(grid, limits)
    _check_choices(params, grid)
    return Preset(params, grid, chosen.default_filters)


def _check_names(name: str, kind: Parameterization, overrides: dict[str, Any]) -> None:
    """InvalidRequestError for an unknown knob, or one of the other kind of image."""
    unknown = set(overrides) - OVERRIDABLE
    if unknown:
        raise InvalidRequestError(
            f"unknown parameter(s) {', '.join(sorted(unknown))}; valid: "
            + ", ".join(sorted(OVERRIDABLE)),
            sorted(unknown)[0],
        )
    foreign = sorted(
        key
        for key in overrides
        for other, names in ONLY_FOR.items()
        if other != kind and key in names
    )
    if foreign:
        own = sorted(OVERRIDABLE - set().union(*(n for k, n in ONLY_FOR.items() if k != kind)))
        raise InvalidRequestError(
            f"{', '.join(foreign)} does not apply to preset {name} (its image is "
            f"{'a Fourier spectrum' if kind == 'fourier' else 'plain pixels'}); its parameters: "
            + ", ".join(own),
            foreign[0],
        )


def _check_image(params: AscentParams, limits: Limits) -> None:
    """Size, steps, step, rounds, start noise, border, deprocessing and crop."""
    _check_range("size", params.size, limits.min_size, limits.max_size)
    _check_range("steps", params.steps, 1, limits.max_steps)
    _check_range("step_size", params.step_size, 1e-6, limits.max_step_size)
    _check_range("upscale_rounds", params.upscale_rounds, 0, limits.max_upscale_rounds)
    if params.upscale_rounds:
        _check_range("upscale_factor", params.upscale_factor, 1.01, 4.0)
        smallest = params.round_sizes()[0]
        if smallest < limits.min_size:
            raise InvalidRequestError(
                f"upscaling {params.upscale_rounds} rounds by {params.upscale_factor} from "
                f"{params.size} px starts at {smallest} px, below the minimum {limits.min_size}; "
                "use fewer rounds, a smaller factor or a larger size",
                "upscale_rounds",
            )
    _check_range("init_scale", params.init_scale, 0.0, 1e4)
    _check_range("init_offset", params.init_offset, -1e4, 1e4)
    _check_range("border", params.border, 0, params.size // 4)
    _check_range("deprocess_std", params.deprocess_std, 1e-3, 10.0)
    _check_range("deprocess_eps", params.deprocess_eps, 1e-12, 1.0)
    _check_range("crop", params.crop, 0, (params.size - 1) // 2)
    _check_range("revive", params.revive, 0, MAX_REVIVE)
    if params.revive and params.dead_threshold is None:
        raise InvalidRequestError(
            "revive restarts filters found dead, but this request finds none dead "
            "(keep_dead_filters, or a preset without a dead threshold); drop one of them",
            "revive",
        )


def _check_view(params: AscentParams, limits: Limits) -> None:
    """The random views of the Fourier image: padding, shift, scale, rotation."""
    _check_range("pad", params.pad, 0, params.size // 2)
    if params.view_size(params.size) > limits.max_size:
        raise InvalidRequestError(
            f"size + 2 x pad = {params.view_size(params.size)} px is what the network sees, "
            f"above this server's {limits.max_size} px; use pad <= "
            f"{(limits.max_size - params.size) // 2} or a smaller size",
            "pad",
        )
    _check_range("jitter", params.jitter, 0, params.size // 4)
    _check_range("scale_jitter", params.scale_jitter, 0.0, 0.5)
    _check_range("rotate_degrees", params.rotate_degrees, 0.0, 180.0)


def _check_grid(grid: GridParams, limits: Limits) -> None:
    _check_range("grid_margin", grid.margin, 0, limits.max_margin)
    if grid.n is not None:
        _check_range("grid_n", grid.n, 1, limits.max_grid_n)


def _check_choices(params: AscentParams, grid: GridParams) -> None:
    _check_choice("objective", params.objective, ("activation", "pre_activation"))
    _check_choice("preprocessing", params.preprocessing, ("raw", "model"))
    if params.gradient_norm not in ("rms", "l2"):
        raise InvalidRequestError(
            f"gradient_norm must be rms or l2, got {quoted(params.gradient_norm)}", "gradient_norm"
        )
    if grid.order not in ("loss", "index"):
        raise InvalidRequestError(
            f"grid_order must be loss or index, got {quoted(grid.order)}", "grid_order"
        )
