"""Conversions between the wire messages and the engine's types (no I/O, no gRPC calls)."""

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from filtercast import contract
from filtercast.contract import IMAGE_FORMATS, PRECISIONS, PRESETS, ContractError
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.errors import InvalidRequestError
from filtercast_server.jobs import FilterOutcome, FilterPreview, Plan
from filtercast_server.objectives import decimal

if TYPE_CHECKING:  # it imports TensorFlow; wire only reads a loaded model's description
    from filtercast_server.engine.models import LoadedModel
from filtercast_server.analysis import MAX_CHANNELS
from filtercast_server.images import MAX_IMAGE_PIXELS
from filtercast_server.params import AscentParams, GridParams, Limits
from filtercast_server.png import png_bytes
from filtercast_server.presets import CATALOG
from filtercast_server.selection import FilterSelection
from filtercast_server.targets import MAX_GROUP

MIN_PREVIEW_EVERY = 5  # a preview costs a deprocess: not every step of every row
MAX_PREVIEW_EVERY = 100_000
PREVIEW_SIDE = 128  # pixels: larger previews are shrunk to it
OVERRIDE_FIELDS = (
    "size",
    "steps",
    "step_size",
    "upscale_rounds",
    "upscale_factor",
    "deprocess_std",
    "border",
    "crop",
    "objective",
    "preprocessing",
    "revive",
    "pad",
    "jitter",
    "scale_jitter",
    "rotate_degrees",
    "init_scale",
)
# float32 on the wire: kept as the decimal the client meant.
FLOAT_FIELDS = (
    "step_size",
    "upscale_factor",
    "deprocess_std",
    "scale_jitter",
    "rotate_degrees",
    "init_scale",
)
# Where each engine parameter lives in a VisualizeFiltersRequest (google.rpc.BadRequest
# field violations name these paths).
FIELD_PATHS = {
    **{name: f"overrides.{name}" for name in OVERRIDE_FIELDS},
    "grid_n": "grid.n",
    "grid_margin": "grid.margin",
    "dead_threshold": "keep_dead_filters",
}


def preview_every_of(request: pb.VisualizeFiltersRequest) -> int:
    """Steps between previews (0: none), or InvalidRequestError below the server's minimum."""
    every = request.preview_every if request.HasField("preview_every") else 0
    if every and not MIN_PREVIEW_EVERY <= every <= MAX_PREVIEW_EVERY:
        raise InvalidRequestError(
            f"preview_every={every}: take {MIN_PREVIEW_EVERY}..{MAX_PREVIEW_EVERY} steps "
            "between previews, or 0 for none",
            "preview_every",
        )
    return every


def field_path(name: str | None) -> str:
    """The request field an engine parameter came from ("size" -> "overrides.size")."""
    return FIELD_PATHS.get(name or "", name or "")


def _enum(field: str, table: Mapping[str, int], value: int, default: str) -> str:
    name = contract.name_of(table, value, default)
    if name is None:
        valid = ", ".join(name.upper() for name in table)
        raise InvalidRequestError(f"unknown {field} {value}; valid: {valid}", field)
    return name


def preset_name(request: pb.VisualizeFiltersRequest) -> str:
    """The request's preset, by name."""
    return _enum("preset", PRESETS, request.preset, contract.PRESET_DEFAULT)


def precision_name(request: pb.VisualizeFiltersRequest) -> str:
    """The request's precision, by name."""
    return _enum("precision", PRECISIONS, request.precision, contract.PRECISION_DEFAULT)


def image_format(request: pb.VisualizeFiltersRequest) -> pb.ImageFormat:
    """The wire value of the request's image format (PNG unless RAW is asked for)."""
    name = _enum("image_format", IMAGE_FORMATS, request.image_format, contract.IMAGE_FORMAT_DEFAULT)
    return IMAGE_FORMATS[name]


def overrides_of(request: pb.VisualizeFiltersRequest) -> dict[str, Any]:
    """Preset overrides: the set fields of `overrides`, plus model, layer and grid."""
    overrides: dict[str, Any] = {
        name: getattr(request.overrides, name)
        for name in OVERRIDE_FIELDS
        if request.overrides.HasField(name)
    }
    for name in FLOAT_FIELDS:
        if name in overrides:
            overrides[name] = decimal(overrides[name])
    if request.model:
        overrides["model"] = request.model
    if request.layer:
        overrides["layer"] = request.layer
    if request.grid.HasField("n"):
        overrides["grid_n"] = request.grid.n
    if request.grid.HasField("margin"):
        overrides["grid_margin"] = request.grid.margin
    if request.keep_dead_filters:
        overrides["dead_threshold"] = None
    return overrides


def filters_of(request: pb.VisualizeFiltersRequest | pb.DatasetExamplesRequest) -> FilterSelection:
    """The filter selection as make_plan takes it (None: the preset's default).

    Ranges stay spans: make_plan checks their bounds before expanding them.
    """
    try:
        return contract.spans_of(request.filters)
    except ContractError as error:
        raise InvalidRequestError(str(error), error.field) from error


def check_grid_fits(plan: Plan, grid_disabled: bool, max_message_bytes: int) -> None:
    """Reject a grid whose raw size could not fit in one message."""
    if grid_disabled:
        return
    params = plan.params
    n = plan.grid.n if plan.grid.n is not None else math.isqrt(len(plan.filters))
    n = min(n, math.isqrt(len(plan.filters)))
    side = params.output_size

    def raw_bytes(k: int) -> int:
        return (k * side + (k - 1) * plan.grid.margin) ** 2 * 3

    budget = max_message_bytes - 64 * 1024  # room for the message's other fields
    if n and raw_bytes(n) > budget:
        largest = max((k for k in range(1, n) if raw_bytes(k) <= budget), default=0)
        raise InvalidRequestError(
            f"a {n}x{n} grid of {side} px pictures ({raw_bytes(n)} bytes raw) exceeds the "
            f"{max_message_bytes}-byte message limit; ask for grid.n <= {largest}, a smaller "
            "size, or grid.disabled",
            "grid_n",
        )


def resolved_params(
    plan: Plan, preset: str, fmt: pb.ImageFormat, grid_disabled: bool
) -> pb.ResolvedParams:
    """Every value the request resolved to, for Accepted."""
    message = params_message(plan.params, plan.grid, preset)
    message.precision = PRECISIONS[plan.precision.value]
    message.seed = plan.seed
    message.grid_disabled = grid_disabled
    message.image_format = fmt
    for name, value in plan.start.fields().items() if plan.start else ():
        setattr(message, name, value)
    return message


def params_message(p: AscentParams, grid: GridParams, preset: str) -> pb.ResolvedParams:
    """A preset's parameters as the wire's ResolvedParams (no seed, precision or format)."""
    message = pb.ResolvedParams(
        model=p.model,
        layer=p.layer,
        preset=PRESETS[preset],
        size=p.size,
        steps=p.steps,
        step_size=p.step_size,
        init_scale=p.init_scale,
        init_offset=p.init_offset,
        gradient_norm=p.gradient_norm,
        border=p.border,
        upscale_rounds=p.upscale_rounds,
        upscale_factor=p.upscale_factor,
        deprocess_std=p.deprocess_std,
        deprocess_eps=p.deprocess_eps,
        crop=p.crop,
        grid_n=grid.n or 0,
        grid_margin=grid.margin,
        grid_order=grid.order,
        parameterization=p.parameterization,
        objective=p.objective,
        preprocessing=p.preprocessing,
        revive=p.revive,
        pad=p.pad,
        jitter=p.jitter,
        scale_jitter=p.scale_jitter,
        rotate_degrees=p.rotate_degrees,
    )
    if p.dead_threshold is not None:
        message.dead_threshold = p.dead_threshold
    return message


def encode_image(image: np.ndarray, fmt: pb.ImageFormat) -> pb.Image:
    """A uint8 (H, W, 3) or (H, W, 1) picture as a wire Image, PNG (RGB or grayscale) or raw."""
    height, width, channels = image.shape
    data = np.ascontiguousarray(image).tobytes() if fmt == pb.IMAGE_FORMAT_RAW else png_bytes(image)
    return pb.Image(format=fmt, data=data, width=width, height=height, channels=channels)


def picture_of(outcome: FilterOutcome, fmt: pb.ImageFormat) -> pb.Image:
    """A finished filter's wire Image: a cached PNG as it was stored, anything else encoded."""
    assert outcome.image is not None, "a filter without a picture has no Image"
    if outcome.png is not None and fmt == pb.IMAGE_FORMAT_PNG:
        height, width, channels = outcome.image.shape
        return pb.Image(format=fmt, data=outcome.png, width=width, height=height, channels=channels)
    return encode_image(outcome.image, fmt)


def preset_infos() -> list[pb.PresetInfo]:
    """Every preset with its defaults, for ListModels."""
    return [
        pb.PresetInfo(
            preset=PRESETS[name],
            name=name,
            defaults=params_message(recipe.params, recipe.grid, name),
            default_filters=recipe.default_filters or 0,
        )
        for name, recipe in CATALOG.items()
    ]


def limits_message(limits: Limits, **serving: Any) -> pb.ServerLimits:
    """A server's request limits, plus its serving limits (queues, streams), for ListModels."""
    return pb.ServerLimits(
        min_size=limits.min_size,
        max_size=limits.max_size,
        max_steps=limits.max_steps,
        max_filters=limits.max_filters,
        max_request_cost=limits.max_cost,
        max_grid_n=limits.max_grid_n,
        max_grid_margin=limits.max_margin,
        max_message_bytes=contract.MAX_MESSAGE_BYTES,
        max_request_bytes=contract.MAX_REQUEST_BYTES,
        max_objective_terms=contract.MAX_TERMS,
        max_direction_values=contract.MAX_VECTOR,
        max_group_pictures=MAX_GROUP,
        max_image_bytes=contract.MAX_IMAGE_BYTES,
        max_image_pixels=MAX_IMAGE_PIXELS,
        max_analyzed_channels=MAX_CHANNELS,
        min_preview_every=MIN_PREVIEW_EVERY,
        **serving,
    )


def model_info(model: "LoadedModel") -> pb.ModelInfo:
    """A loaded model as ListModels and DescribeModel describe it."""
    config = model.config
    return pb.ModelInfo(
        name=model.name,
        weights_source=model.weights_source,
        weights_sha256=model.weights_sha256,
        device=model.device.description,
        auto_precision=PRECISIONS[model.resolve_precision("auto").value],
        default_layer=model.default_layer,
        layers=[
            pb.LayerInfo(
                name=i.name, type=i.type, channels=i.channels, output_stride=i.stride, dtype=i.dtype
            )
            for i in model.layers
        ],
        input_size=model.input_size or 0,
        input_channels=model.channels,
        preprocessing=model.preprocessing.describe(),
        default_preset=PRESETS[model.default_preset],
        display_name=config.display_name,
        description=config.description,
        kind="builtin" if config.builtin else "file",
        dense_layers=[
            pb.DenseLayerInfo(name=d.name, type=d.type, units=d.units, activation=d.activation)
            for d in model.dense_layers
        ],
        datasets=[pb.DatasetInfo(name=name) for name, _ in config.datasets],
    )


def accepted_message(
    request_id: str,
    plan: Plan,
    model: "LoadedModel",
    params: pb.ResolvedParams,
    cached: list[int],
) -> pb.VisualizeFiltersResponse:
    """The stream's first event: what will run, on what, and what the cache holds."""
    accepted = pb.Accepted(
        request_id=request_id,
        params=params,
        filter_count=len(plan.filters),
        filters=plan.filters,
        weights_source=model.weights_source,
        weights_sha256=model.weights_sha256,
        device=model.device.description,
        cached_filters=cached,
        objectives=[target.objective.text() for target in plan.targets],
    )
    return pb.VisualizeFiltersResponse(accepted=accepted)


def filter_message(
    outcome: FilterOutcome, done: int, total: int, image_key: str, plan: Plan
) -> pb.VisualizeFiltersResponse:
    """One finished filter, its picture not yet attached (see picture_of)."""
    target = plan.targets[outcome.index] if plan.targets else None
    message = pb.FilterResult(
        target=target.target if target else 0,
        member=target.member if target else 0,
        index=outcome.index,
        loss=outcome.loss,
        dead=outcome.dead,
        steps=outcome.steps,
        seconds=outcome.seconds,
        done=done,
        total=total,
        revived=outcome.revived,
        cached=outcome.cached,
        image_key=image_key,
        loss_curve=np.asarray(outcome.curve, "<f4").tobytes(),
    )
    return pb.VisualizeFiltersResponse(filter=message)


def preview_message(preview: FilterPreview, plan: Plan) -> pb.VisualizeFiltersResponse:
    """A picture in flight, encoded as PNG (a picture past PREVIEW_SIDE shrunk to it)."""
    target = plan.targets[preview.index] if plan.targets else None
    image = preview.image
    if max(image.shape[:2]) > PREVIEW_SIDE:  # a preview is glanced at, not kept
        small = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
        small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.BILINEAR)
        image = np.asarray(small).reshape(small.height, small.width, image.shape[-1])
    return pb.VisualizeFiltersResponse(
        preview=pb.FilterPreview(
            index=preview.index,
            step=preview.step,
            loss=preview.loss,
            image=encode_image(image, pb.IMAGE_FORMAT_PNG),
            target=target.target if target else 0,
            member=target.member if target else 0,
        )
    )


def grid_message(
    image: pb.Image, n: int, margin: int, order: list[int]
) -> pb.VisualizeFiltersResponse:
    """The stitched grid."""
    return pb.VisualizeFiltersResponse(grid=pb.Grid(image=image, n=n, margin=margin, order=order))


def summary_message(
    kept: int, dead: int, seconds: float, filter_seconds: float, revived: int, cached: int
) -> pb.VisualizeFiltersResponse:
    """The stream's last event: its totals."""
    summary = pb.Summary(
        kept=kept,
        dead=dead,
        total_seconds=seconds,
        mean_filter_seconds=filter_seconds / max(1, kept + dead),
        revived=revived,
        cached=cached,
    )
    return pb.VisualizeFiltersResponse(summary=summary)
