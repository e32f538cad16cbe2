"""Conversions between the wire messages and the engine's types (no I/O, no gRPC calls)."""

import io
import math
from typing import Any

import numpy as np
from PIL import Image

from filtercast.v1 import filtercast_pb2 as pb
from filtercast_client.client import PRECISIONS as PRECISION_ENUMS
from filtercast_client.client import PRESETS as PRESET_ENUMS
from filtercast_server.ascent import Plan
from filtercast_server.errors import InvalidRequestError
from filtercast_server.presets import FilterSelection, FilterSpan

PRESET_NAMES = {
    pb.PRESET_UNSPECIFIED: "classic",
    pb.PRESET_CLASSIC: "classic",
    pb.PRESET_UPSCALE: "upscale",
    pb.PRESET_KERAS_IO: "keras_io",
}
PRECISION_NAMES = {
    pb.PRECISION_UNSPECIFIED: "auto",
    pb.PRECISION_AUTO: "auto",
    pb.PRECISION_FLOAT32: "float32",
    pb.PRECISION_BFLOAT16: "bfloat16",
}
OVERRIDE_FIELDS = (
    "size",
    "steps",
    "step_size",
    "upscale_rounds",
    "upscale_factor",
    "deprocess_std",
    "border",
    "crop",
)


def preset_name(request: pb.VisualizeFiltersRequest) -> str:
    """The request's preset, by name."""
    if request.preset not in PRESET_NAMES:
        raise InvalidRequestError(
            f"unknown preset {request.preset}; valid: CLASSIC, UPSCALE, KERAS_IO"
        )
    return PRESET_NAMES[request.preset]


def precision_name(request: pb.VisualizeFiltersRequest) -> str:
    """The request's precision, by name."""
    if request.precision not in PRECISION_NAMES:
        raise InvalidRequestError(
            f"unknown precision {request.precision}; valid: AUTO, FLOAT32, BFLOAT16"
        )
    return PRECISION_NAMES[request.precision]


def image_format(request: pb.VisualizeFiltersRequest) -> int:
    """PNG unless RAW is asked for."""
    if request.image_format not in (
        pb.IMAGE_FORMAT_UNSPECIFIED,
        pb.IMAGE_FORMAT_PNG,
        pb.IMAGE_FORMAT_RAW,
    ):
        raise InvalidRequestError(f"unknown image_format {request.image_format}; valid: PNG, RAW")
    return (
        pb.IMAGE_FORMAT_RAW if request.image_format == pb.IMAGE_FORMAT_RAW else pb.IMAGE_FORMAT_PNG
    )


def overrides_of(request: pb.VisualizeFiltersRequest) -> dict[str, Any]:
    """Preset overrides: the set fields of `overrides`, plus model, layer and grid."""
    overrides: dict[str, Any] = {
        name: getattr(request.overrides, name)
        for name in OVERRIDE_FIELDS
        if request.overrides.HasField(name)
    }
    for name in ("step_size", "upscale_factor", "deprocess_std"):
        if name in overrides:  # float32 on the wire: keep the decimal the client meant
            overrides[name] = float(np.format_float_positional(np.float32(overrides[name])))
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


def filters_of(request: pb.VisualizeFiltersRequest) -> FilterSelection:
    """The filter selection as make_plan takes it (None: the preset's default).

    A range stays a span: make_plan checks its bounds before expanding it.
    """
    which = request.filters.WhichOneof("selection")
    if which == "range":
        start, stop = request.filters.range.start, request.filters.range.stop
        return FilterSpan(start, stop or None)
    if which == "list":
        if not request.filters.list.indices:
            raise InvalidRequestError("filters.list is empty; give at least one index")
        return list(request.filters.list.indices)
    return None


def check_grid_fits(plan: Plan, grid_disabled: bool, max_message_bytes: int) -> None:
    """Reject a grid whose raw size could not fit in one message."""
    if grid_disabled:
        return
    params = plan.params
    n = params.grid_n if params.grid_n is not None else math.isqrt(len(plan.filters))
    n = min(n, math.isqrt(len(plan.filters)))
    side = params.output_size

    def raw_bytes(k: int) -> int:
        return (k * side + (k - 1) * params.grid_margin) ** 2 * 3

    budget = max_message_bytes - 64 * 1024  # room for the message's other fields
    if n and raw_bytes(n) > budget:
        largest = max((k for k in range(1, n) if raw_bytes(k) <= budget), default=0)
        raise InvalidRequestError(
            f"a {n}x{n} grid of {side} px pictures ({raw_bytes(n)} bytes raw) exceeds the "
            f"{max_message_bytes}-byte message limit; ask for grid.n <= {largest}, a smaller "
            "size, or grid.disabled"
        )


def resolved_params(plan: Plan, preset: str, fmt: int, grid_disabled: bool) -> pb.ResolvedParams:
    """Every value the request resolved to, for Accepted."""
    p = plan.params
    message = pb.ResolvedParams(
        model=p.model,
        layer=p.layer,
        preset=PRESET_ENUMS[preset],
        precision=PRECISION_ENUMS[plan.precision.value],
        seed=plan.seed,
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
        grid_n=p.grid_n or 0,
        grid_margin=p.grid_margin,
        grid_order=p.grid_order,
        grid_disabled=grid_disabled,
        image_format=fmt,
    )
    if p.dead_threshold is not None:
        message.dead_threshold = p.dead_threshold
    return message


def encode_image(image: np.ndarray, fmt: int) -> pb.Image:
    """A uint8 (H, W, 3) picture as a wire Image, PNG or raw."""
    height, width = image.shape[:2]
    if fmt == pb.IMAGE_FORMAT_RAW:
        data = np.ascontiguousarray(image).tobytes()
    else:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
        data = buffer.getvalue()
    return pb.Image(format=fmt, data=data, width=width, height=height)
