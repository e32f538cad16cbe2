"""What each picture of a request maximizes: objectives checked against a model, as targets.

A request names objectives (one picture each, k with diversity) or an
interpolation (n frames). Every term is checked before any work is queued:
its layer exists and fits its kind, its index, position and vector fit the
layer, its weight is finite. A neuron's centre is resolved to the position it
means for the view the network sees. Planning asks the model questions only,
so this imports no TensorFlow.
"""

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from filtercast_server.errors import InvalidRequestError
from filtercast_server.objectives import (
    Diversity,
    Group,
    Interpolation,
    Objective,
    Target,
    Term,
    is_filter,
    noise_of,
)
from filtercast_server.params import AscentParams

if TYPE_CHECKING:  # it imports TensorFlow; targets only asks it questions
    from filtercast_server.engine.models import LoadedModel

MAX_GROUP = 16  # pictures of one diversity group or interpolation
MAX_WEIGHT = 1e6
MAX_COSSIM_POWER = 16.0


def resolve_targets(
    model: "LoadedModel",
    params: AscentParams,
    objectives: Sequence[Objective],
    diversity: Diversity | None = None,
    interpolation: Interpolation | None = None,
) -> tuple[Target, ...]:
    """The request's pictures, in order; InvalidRequestError names what to change."""
    if interpolation is not None:
        if objectives:
            raise InvalidRequestError(
                "an interpolation goes from its start to its end objective; send no "
                "objectives beside it",
                "objectives",
            )
        return _frames(model, params, interpolation)
    checked = [
        check_objective(model, params, o, f"objectives[{i}]") for i, o in enumerate(objectives)
    ]
    if diversity is None or diversity.k == 0:
        return tuple(_single(o, i) for i, o in enumerate(checked))
    _check_group(params, diversity.k, "diversity.k")
    # Default: the objective's first (H, W, C) layer; for a dense unit, the model's deepest one.
    spatial = [name for name in checked[0].layers if model.dense_layer(name) is None]
    layer = diversity.layer or (spatial[0] if spatial else model.layers[-1].name)
    if model.dense_layer(layer) is not None:
        raise InvalidRequestError(
            f"diversity compares Gram matrices of an (H, W, C) layer; {layer} is dense", "diversity"
        )
    model.layer(layer)
    weight = _finite(diversity.weight, "diversity.weight")
    targets = []
    for i, objective in enumerate(checked):
        group = Group(
            "diversity",
            diversity.k,
            f"diversity|{objective.identity()}|{diversity.k}|{weight!r}|{layer}",
            diversity_layer=layer,
            diversity_weight=weight,
        )
        targets += [
            Target(objective, noise_of(objective.identity(), str(member)), i, group, member)
            for member in range(diversity.k)
        ]
    return tuple(targets)


def _single(objective: Objective, number: int) -> Target:
    """One picture of `objective`: a single channel is exactly that filter's picture."""
    if is_filter(objective):
        return Target(objective, (objective.terms[0].index,), number, plain=True)
    return Target(objective, noise_of(objective.identity()), number)


def _frames(
    model: "LoadedModel", params: AscentParams, interpolation: Interpolation
) -> tuple[Target, ...]:
    """The frames (1 - t) * start + t * end, t = i / (n - 1): one group, one noise."""
    n = interpolation.frames
    _check_group(params, n, "interpolation.frames")
    start = check_objective(model, params, interpolation.start, "interpolation.start")
    end = check_objective(model, params, interpolation.end, "interpolation.end")
    description = f"interpolation|{start.identity()}|{end.identity()}|{n}"
    group = Group("interpolation", n, description)
    noise = noise_of(description)
    frames = []
    for member in range(n):
        t = member / (n - 1)
        objective = Objective(start.scaled(1.0 - t).terms + end.scaled(t).terms)
        frames.append(Target(objective, noise, 0, group, member))
    return tuple(frames)


def _check_group(params: AscentParams, size: int, field: str) -> None:
    if not 2 <= size <= MAX_GROUP:
        raise InvalidRequestError(f"{field} must be 2..{MAX_GROUP}, got {size}", field)
    if params.parameterization != "fourier":
        raise InvalidRequestError(
            f"{field.split('.')[0]} runs on the robust preset: its rows step in lockstep "
            "through one group, which the pixel presets' dead filters, restarts and upscaling "
            "rounds would break; ask for preset robust",
            "preset",
        )


def check_objective(
    model: "LoadedModel", params: AscentParams, objective: Objective, field: str
) -> Objective:
    """`objective` with every term checked against `model`, neuron centres resolved."""
    if not objective.terms:
        raise InvalidRequestError(f"{field} has no terms; give at least one", field)
    return Objective(
        tuple(
            _check_term(model, params, term, f"{field}.terms[{i}]")
            for i, term in enumerate(objective.terms)
        )
    )


def _check_term(model: "LoadedModel", params: AscentParams, term: Term, field: str) -> Term:
    _finite(term.weight, f"{field}.weight")
    dense = model.dense_layer(term.layer)
    if dense is not None:
        kind = "unit" if term.kind == "channel" else term.kind
        if kind not in ("unit", "layer", "direction"):
            raise InvalidRequestError(
                f"{field}: {term.layer} is a dense layer of {dense.units} units; ask for a unit "
                f"({term.layer}:INDEX), layer({term.layer}) or a direction",
                field,
            )
        term, width = replace(term, kind=kind), dense.units
    else:
        if term.kind == "unit":
            raise InvalidRequestError(
                f"{field}: {term.layer} is not a dense layer; its channels are "
                f"{term.layer}:INDEX (DescribeModel lists dense_layers)",
                field,
            )
        info = model.layer(term.layer)
        model.check_objective(term.layer, params.objective)
        width = info.channels
    if term.kind in ("channel", "unit", "neuron") and not 0 <= term.index < width:
        what = "units" if term.kind == "unit" else "channels"
        raise InvalidRequestError(
            f"{field}: index {term.index} is out of range; {term.layer} has {width} {what}: "
            f"0..{width - 1}",
            field,
        )
    if term.kind == "neuron":
        return replace(term, position=_position(model, params, term, field))
    if term.kind == "direction":
        _check_vector(term, width, field)
    return replace(term, vector=(), cossim_power=0.0) if term.kind != "direction" else term


def _position(
    model: "LoadedModel", params: AscentParams, term: Term, field: str
) -> tuple[int, int]:
    """A neuron's (row, column) in its layer's output for the view the network sees."""
    view = params.view_size(params.size)
    height, width = model.output_size(term.layer, view)
    if term.position is None:
        return height // 2, width // 2
    row, column = term.position
    if not (0 <= row < height and 0 <= column < width):
        raise InvalidRequestError(
            f"{field}: position ({row},{column}) is outside {term.layer}'s {height}x{width} "
            f"output at {view} px; rows 0..{height - 1}, columns 0..{width - 1}",
            field,
        )
    return row, column


def _check_vector(term: Term, width: int, field: str) -> None:
    if len(term.vector) != width:
        raise InvalidRequestError(
            f"{field}: a direction on {term.layer} needs {width} values (one per channel), "
            f"got {len(term.vector)}",
            field,
        )
    if not all(math.isfinite(v) for v in term.vector) or not any(term.vector):
        raise InvalidRequestError(f"{field}: a direction's values must be finite, not all 0", field)
    if not 0.0 <= term.cossim_power <= MAX_COSSIM_POWER:
        raise InvalidRequestError(
            f"{field}: cossim_power must be 0..{MAX_COSSIM_POWER:g}, got {term.cossim_power}", field
        )


def _finite(weight: float, field: str) -> float:
    if not (math.isfinite(weight) and abs(weight) <= MAX_WEIGHT):
        raise InvalidRequestError(
            f"{field} must be finite and within +-{MAX_WEIGHT:g}, got {weight}", field
        )
    return weight
