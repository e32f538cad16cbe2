"""The presets, request overrides and their validation.

A preset fixes every parameter of one version of the algorithm: the three
seeds (published Keras examples, reproduced faithfully) and ``robust``, the
feature-visualization recipe of Olah et al. (Distill 2017). A request may
override any knob that applies to its preset, within configurable limits. The
result is a frozen :class:`AscentParams`, the complete recipe for one filter.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from filtercast.contract import ContractError, FilterSpan, parse_filter_spec
from filtercast_server.errors import InvalidRequestError, quoted

GradientNorm = Literal["rms", "l2"]
GridOrder = Literal["loss", "index"]
Parameterization = Literal["pixels", "fourier"]
Objective = Literal["activation", "pre_activation"]
InputPreprocessing = Literal["raw", "model"]


@dataclass(frozen=True)
class AscentParams:
    """Everything that decides one filter's picture (plans with equal params share batches)."""

    model: str
    layer: str
    size: int  # final image side in pixels
    steps: int  # ascent steps per round
    step_size: float
    init_scale: float  # start = (uniform[0,1) - 0.5) * init_scale + init_offset
    init_offset: float
    gradient_norm: GradientNorm  # rms: g / (sqrt(mean g²) + 1e-7); l2: g / ||g||
    border: int  # activation pixels left out of the loss on each side
    dead_threshold: float | None  # a filter whose loss falls to <= this is dead
    upscale_rounds: int  # 0: one ascent at `size`; k: k rounds growing to `size`
    upscale_factor: float
    deprocess_std: float
    deprocess_eps: float
    crop: int  # pixels removed from each side of the final picture
    # pixels: the seeds' plain image and normalized-gradient step. fourier: the
    # image as a 1/f-scaled spectrum with decorrelated colours and a sigmoid,
    # climbed with Adam (step_size is its learning rate) through random views.
    parameterization: Parameterization = "pixels"
    # pre_activation: a layer's output before its fused or separate activation
    # (ReLU), which never has a zero gradient everywhere.
    objective: Objective = "activation"
    # raw: 0..255 RGB as the seeds fed it; model: the network's training
    # preprocessing (caffe for VGG, tf for ResNet50V2; a registered model's own).
    preprocessing: InputPreprocessing = "raw"
    # Random view of the image at each step (fourier): gray padding on each
    # side, a shift of up to `jitter` px, a scale in 1 ± scale_jitter, and a
    # rotation of up to ± rotate_degrees.
    pad: int = 0
    jitter: int = 0
    scale_jitter: float = 0.0
    rotate_degrees: float = 0.0
    revive: int = 0  # restarts from fresh noise for a filter that dies (pixels)

    def round_sizes(self) -> list[int]:
        """Image side during each ascent round."""
        if self.upscale_rounds == 0:
            return [self.size]
        k, f = self.upscale_rounds, self.upscale_factor
        return [int(self.size / f ** (k - i)) for i in range(k)]

    def resize_targets(self) -> list[int | None]:
        """Side to resize to after each round (None: no resize)."""
        if self.upscale_rounds == 0:
            return [None]
        k, f = self.upscale_rounds, self.upscale_factor
        return [int(self.size / f ** (k - 1 - i)) for i in range(k)]

    def view_size(self, size: int) -> int:
        """Side of what the network sees for an image of `size` px (padding included)."""
        return size + 2 * self.pad

    def max_steps(self) -> int:
        """The most steps a filter can count: every round's, plus one per restart (revive)."""
        return len(self.round_sizes()) * self.steps + self.revive

    def pixel_steps(self) -> int:
        """Pixels the network sees times steps over every round: one filter's cost."""
        return sum(self.view_size(size) ** 2 * self.steps for size in self.round_sizes())

    @property
    def output_size(self) -> int:
        """Side of the delivered picture (after the crop)."""
        return self.size - 2 * self.crop

    def to_dict(self) -> dict[str, Any]:
        """The resolved values, for manifests and the wire."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GridParams:
    """How a request's best pictures are stitched into one grid."""

    n: int | None  # pictures per side; None: floor(sqrt(kept))
    margin: int  # pixels between pictures
    order: GridOrder  # loss: best first; index: filter order

    def to_dict(self) -> dict[str, Any]:
        """The grid's values under their request names (grid_n, grid_margin, grid_order)."""
        return {f"grid_{name}": value for name, value in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class Preset:
    """One published version of the algorithm: its ascent, its grid, its own filter count."""

    params: AscentParams
    grid: GridParams
    default_filters: int | None  # the seed's own filter count (None: all)


ROBUST_STEPS = 100  # where robustness saturates in bench/quality_bench.py (docs/benchmarks.md)

# Keras' classic conv_filter_visualization.py.
CLASSIC = AscentParams(
    model="vgg16",
    layer="block5_conv1",
    size=128,
    steps=20,
    step_size=1.0,
    init_scale=20.0,
    init_offset=128.0,
    gradient_norm="rms",
    border=0,
    dead_threshold=0.0,
    upscale_rounds=0,
    upscale_factor=1.0,
    deprocess_std=0.1,
    deprocess_eps=1e-7,
    crop=0,
)

PRESETS: dict[str, Preset] = {
    "classic": Preset(CLASSIC, GridParams(8, 5, "loss"), default_filters=200),
    # Its later version: 9 rounds of 15 steps, upscaling by 1.2 to 412 px.
    "upscale": Preset(
        dataclasses.replace(
            CLASSIC,
            size=412,
            steps=15,
            dead_threshold=1e-7,
            upscale_rounds=9,
            upscale_factor=1.2,
            deprocess_std=0.25,
        ),
        GridParams(None, 5, "loss"),
        default_filters=None,
    ),
    # keras.io "Visualizing what convnets learn".
    "keras_io": Preset(
        AscentParams(
            model="resnet50v2",
            layer="conv3_block4_out",
            size=180,
            steps=30,
            step_size=10.0,
            init_scale=0.25,
            init_offset=0.0,
            gradient_norm="l2",
            border=2,
            dead_threshold=None,
            upscale_rounds=0,
            upscale_factor=1.0,
            deprocess_std=0.15,
            deprocess_eps=1e-5,
            crop=25,
        ),
        GridParams(8, 5, "index"),
        default_filters=64,
    ),
    # Olah et al., "Feature Visualization" (Distill 2017), as in Lucid: the
    # first 64 filters of VGG16 block5_conv1, every one with a picture.
    "robust": Preset(
        dataclasses.replace(
            CLASSIC,
            steps=ROBUST_STEPS,
            step_size=0.05,
            init_scale=0.01,
            init_offset=0.0,
            dead_threshold=None,
            parameterization="fourier",
            objective="pre_activation",
            preprocessing="model",
            pad=12,
            jitter=8,
            scale_jitter=0.1,
            rotate_degrees=10.0,
        ),
        GridParams(8, 5, "loss"),
        default_filters=64,
    ),
}


@dataclass(frozen=True)
class Limits:
    """What a request may ask for; operators set these per deployment."""

    min_size: int = 16
    max_size: int = 512
    max_steps: int = 200
    max_step_size: float = 1000.0
    max_upscale_rounds: int = 12
    max_filters: int = 2048  # ResNet50V2's widest layers have 2048 channels
    max_grid_n: int = 32
    max_margin: int = 64
    # Filters x pixels x steps over every round: 3e9 admits each preset's own
    # default on VGG16 (upscale, all 512 filters: 2.84e9) and bounds the rest.
    max_cost: int = 3_000_000_000


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


def resolve(preset: str, overrides: dict[str, Any], limits: Limits) -> Preset:
    """The preset with `overrides` applied, each validated against `limits`.

    Overrides name AscentParams fields and grid_n, grid_margin, grid_order.

    Model and layer names are checked later against the loaded model; here
    only values that need no model are validated.
    """
    if preset not in PRESETS:
        raise InvalidRequestError(
            f"unknown preset {quoted(preset)}; valid: {', '.join(PRESETS)}", "preset"
        )
    unknown = set(overrides) - OVERRIDABLE
    if unknown:
        raise InvalidRequestError(
            f"unknown parameter(s) {', '.join(sorted(unknown))}; valid: "
            + ", ".join(sorted(OVERRIDABLE)),
            sorted(unknown)[0],
        )
    chosen = PRESETS[preset]
    kind = chosen.params.parameterization
    foreign = sorted(
        name
        for name in overrides
        for other, names in ONLY_FOR.items()
        if other != kind and name in names
    )
    if foreign:
        own = sorted(OVERRIDABLE - set().union(*(n for k, n in ONLY_FOR.items() if k != kind)))
        raise InvalidRequestError(
            f"{', '.join(foreign)} does not apply to preset {preset} (its image is "
            f"{'a Fourier spectrum' if kind == 'fourier' else 'plain pixels'}); its parameters: "
            + ", ".join(own),
            foreign[0],
        )
    for name, value in overrides.items():
        _check_type(name, value)
    grid = dataclasses.replace(
        chosen.grid,
        **{
            name.removeprefix("grid_"): v for name, v in overrides.items() if name in GRID_OVERRIDES
        },
    )
    params = dataclasses.replace(
        chosen.params, **{name: v for name, v in overrides.items() if name not in GRID_OVERRIDES}
    )
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
    _check_range("grid_margin", grid.margin, 0, limits.max_margin)
    if grid.n is not None:
        _check_range("grid_n", grid.n, 1, limits.max_grid_n)
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
    _check_range("revive", params.revive, 0, MAX_REVIVE)
    if params.revive and params.dead_threshold is None:
        raise InvalidRequestError(
            "revive restarts filters found dead, but this request finds none dead "
            "(keep_dead_filters, or a preset without a dead threshold); drop one of them",
            "revive",
        )
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
    return Preset(params, grid, chosen.default_filters)


# What a request may name: a spec string ("0:8,12"), spans, a list of
# indices, or None for the preset's default.
FilterSelection = str | FilterSpan | list[FilterSpan] | list[int] | None


def select_filters(
    selection: FilterSelection,
    channels: int,
    default_count: int | None,
    max_filters: int = Limits.max_filters,
) -> list[int]:
    """The filter indices a selection names, in order, without repeats.

    Bounds and the count are checked arithmetically before any list is built,
    so a selection like 0:2147483647 costs nothing to refuse. None is the
    preset's default count (all when it has none), clamped to the layer.
    """
    if isinstance(selection, list) and not all(isinstance(s, FilterSpan) for s in selection):
        if len(selection) > max_filters:
            raise InvalidRequestError(
                f"{len(selection)} filter indices listed; at most {max_filters} per request",
                "filters",
            )
        return validate_filters([int(i) for i in selection], channels)  # type: ignore[arg-type]
    if selection is None:
        spans = [FilterSpan(0, min(default_count or channels, channels))]
    elif isinstance(selection, str):
        try:
            spans = parse_filter_spec(selection)
        except ContractError as error:
            raise InvalidRequestError(str(error), "filters") from error
    elif isinstance(selection, FilterSpan):
        spans = [selection]
    else:
        spans = [s for s in selection if isinstance(s, FilterSpan)]
    count = 0
    for span in spans:
        stop = channels if span.stop is None else span.stop
        if span.start < 0 or stop > channels:
            bad = span.start if span.start < 0 else max(span.start, channels)
            raise InvalidRequestError(
                f"filter {bad} is out of range; this layer has {channels} filters: "
                f"0..{channels - 1}",
                "filters",
            )
        if span.start >= stop:
            raise InvalidRequestError(
                f"empty filter range {span.start}:{stop}: start must be < stop", "filters"
            )
        count += stop - span.start
    if count > max_filters:
        raise InvalidRequestError(
            f"{count} filters requested; at most {max_filters} per request", "filters"
        )
    indices: list[int] = []
    for span in spans:
        indices.extend(range(span.start, channels if span.stop is None else span.stop))
    return list(dict.fromkeys(indices))


def validate_filters(indices: list[int], channels: int) -> list[int]:
    """Check indices against the layer's channel count; keep order, drop repeats."""
    bad = [i for i in indices if not 0 <= i < channels]
    if bad:
        raise InvalidRequestError(
            f"filter {bad[0]} is out of range; this layer has {channels} filters: "
            f"0..{channels - 1}",
            "filters",
        )
    return list(dict.fromkeys(indices))
