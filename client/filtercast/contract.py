"""The filtercast wire contract beyond the .proto: one definition for client, CLI and server.

Names of the wire enums, the message-size limits, keepalive, the service
name, address syntax and the filter-spec grammar. It imports neither
TensorFlow nor any gRPC server or client code (only the generated messages),
so the server, the client library and the CLI all import it and none of them
imports another.

Filter-spec grammar (the CLI's ``--filters``, ``Client.visualize(filters=...)``)::

    spec  := item ("," item)*
    item  := "all" | INDEX | [START] ":" [STOP]     (half-open; START defaults to 0,
                                                     STOP to the layer's channel count)

``"0:64"``, ``"1,5,9"``, ``"0:8,100:104"``, ``":16"``, ``"8:"``, ``"all"``.
A step (``"0:8:2"``) is not part of the grammar and is refused by name.

Objective grammar (the CLI's ``--objective``, ``Client.visualize(objectives=...)``)::

    objective := ["-"] term (("+" | "-") term)*
    term      := [NUMBER "*"] atom
    atom      := LAYER ":" INDEX ["@" ("center" | "(" ROW "," COLUMN ")")]
               | "layer(" LAYER ")"
               | "direction(" LAYER "," (FILE.npy | "[" NUMBER ("," NUMBER)* "]")
                 ["," "cossim=" NUMBER] ")"

``LAYER:INDEX`` is a channel (a unit when the layer is dense, which the
server knows); ``@`` makes it a neuron. ``"block5_conv1:12"``,
``"block5_conv1:12@(3,5)"``, ``"layer(block4_conv3)"``, ``"dense_1:3"``,
``"block5_conv1:12 - 0.5*block5_conv1:40"``, ``"direction(block5_conv1, cav.npy)"``.
An interpolation is ``A..B``: two objectives.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from filtercast.v1 import filtercast_pb2 as pb

SERVICE: Final = "filtercast.v1.FilterVisualizerService"

# Largest message either side accepts. A 412 px 8x8 grid is 3,331 x 3,331 x 3
# = 33.3 MB raw and ~20 MB as PNG; 64 MiB leaves room for it in either format.
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
# Largest image a request may carry (AnalyzeImage): a 24 Mpx photograph as JPEG.
MAX_IMAGE_BYTES: Final = 8 * 1024 * 1024
# Largest request the server decodes: an image and its fields (a full list of
# 2048 filter indices is ~10 KB).
MAX_REQUEST_BYTES: Final = MAX_IMAGE_BYTES + 64 * 1024

# Keepalive: clients ping every 30 s (also while idle) and give up after 10 s
# without an answer; servers accept pings down to every 10 s (gRPC's default
# of 5 min answers the client's pings with GOAWAY "too_many_pings").
CLIENT_KEEPALIVE_MS: Final = 30_000
CLIENT_KEEPALIVE_TIMEOUT_MS: Final = 10_000
SERVER_MIN_PING_INTERVAL_MS: Final = 10_000

PRESETS: Final = {
    "classic": pb.PRESET_CLASSIC,
    "upscale": pb.PRESET_UPSCALE,
    "keras_io": pb.PRESET_KERAS_IO,
    "robust": pb.PRESET_ROBUST,
}
PRECISIONS: Final = {
    "auto": pb.PRECISION_AUTO,
    "float32": pb.PRECISION_FLOAT32,
    "bfloat16": pb.PRECISION_BFLOAT16,
}
IMAGE_FORMATS: Final = {"png": pb.IMAGE_FORMAT_PNG, "raw": pb.IMAGE_FORMAT_RAW}
PULL_SPACES: Final = {"pixels": pb.PULL_SPACE_PIXELS, "features": pb.PULL_SPACE_FEATURES}

# UNSPECIFIED (0) of each enum means its documented default.
PRESET_DEFAULT: Final = "classic"
PRECISION_DEFAULT: Final = "auto"
IMAGE_FORMAT_DEFAULT: Final = "png"
PULL_SPACE_DEFAULT: Final = "pixels"


class ContractError(ValueError):
    """A value the contract does not allow; the message says what is valid.

    `field` names the request field it belongs to (proto path), when known.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


Value = TypeVar("Value", bound=int)


def lookup(field: str, table: Mapping[str, Value], name: str) -> Value:
    """The wire value of `name` in the enum table of request field `field`, case-insensitively."""
    value = table.get(name.strip().lower()) if isinstance(name, str) else None
    if value is None:
        raise ContractError(f"unknown {field} {name!r}; valid: {', '.join(table)}", field)
    return value


def name_of(table: Mapping[str, int], value: int, default: str) -> str | None:
    """The name of a wire enum value (UNSPECIFIED: `default`; unknown: None)."""
    if value == 0:
        return default
    return next((name for name, number in table.items() if number == value), None)


@dataclass(frozen=True)
class FilterSpan:
    """Filters start..stop-1 of a layer, not yet expanded (stop None: to the last)."""

    start: int
    stop: int | None = None


_INDEX = r"\s*(\d+)\s*"
_ITEM = re.compile(rf"^(?:{_INDEX}|\s*(\d*)\s*:\s*(\d*)\s*|\s*(all)\s*)$", re.IGNORECASE)
MAX_INDEX: Final = 2**31 - 1  # int32 on the wire
SPEC_HELP: Final = (
    'ranges A:B (half-open, either bound optional), indices and "all", comma-separated'
)


def parse_filter_spec(spec: str) -> list[FilterSpan]:
    """The spans of a filter spec (see the module's grammar), nothing expanded.

    Raises ContractError naming the bad part and showing valid forms.
    """
    if not spec.strip():
        raise ContractError(f"empty filter spec; use {SPEC_HELP}, e.g. 0:64", "filters")
    spans: list[FilterSpan] = []
    for part in spec.split(","):
        match = _ITEM.match(part)
        if match is None:
            hint = (
                "steps (A:B:STEP) are not supported; list the indices instead"
                if part.count(":") > 1
                else f"use {SPEC_HELP}, e.g. 0:8,12"
            )
            raise ContractError(f"bad filter spec item {part.strip()!r}: {hint}", "filters")
        index, start, stop, everything = match.groups()
        numbers = [int(n) for n in (index, start, stop) if n]
        if any(n > MAX_INDEX for n in numbers):
            raise ContractError(
                f"filter spec item {part.strip()!r}: indices go up to {MAX_INDEX}", "filters"
            )
        if everything:
            spans.append(FilterSpan(0, None))
        elif index is not None:
            spans.append(FilterSpan(int(index), int(index) + 1))
        else:
            span = FilterSpan(int(start or 0), int(stop) if stop else None)
            if span.stop is not None and span.start >= span.stop:
                raise ContractError(
                    f"empty filter range {part.strip()!r}: start must be < stop", "filters"
                )
            spans.append(span)
    return spans


def selection_message(spans: list[FilterSpan]) -> pb.FilterSelection:
    """The wire FilterSelection of parsed spans: one range, or several."""
    ranges = [pb.FilterRange(start=s.start, stop=s.stop or 0) for s in spans]
    if len(ranges) == 1:
        return pb.FilterSelection(range=ranges[0])
    return pb.FilterSelection(ranges=pb.FilterRanges(ranges=ranges))


def spans_of(message: pb.FilterSelection) -> list[FilterSpan] | list[int] | None:
    """A wire FilterSelection as spans, explicit indices, or None (the preset's default)."""
    which = message.WhichOneof("selection")
    if which == "list":
        if not message.list.indices:
            raise ContractError("filters.list is empty; give at least one index", "filters.list")
        return list(message.list.indices)
    if which == "range":
        ranges = [message.range]
    elif which == "ranges":
        ranges = list(message.ranges.ranges)
        if not ranges:
            raise ContractError("filters.ranges is empty; give at least one range", "filters")
    else:
        return None
    spans = []
    for item in ranges:
        if item.start < 0 or item.stop < 0:
            raise ContractError(
                f"filter range {item.start}:{item.stop} has a negative bound", "filters"
            )
        if item.stop and item.start >= item.stop:
            raise ContractError(
                f"empty filter range {item.start}:{item.stop}: start must be < stop", "filters"
            )
        spans.append(FilterSpan(item.start, item.stop or None))
    return spans


# --- objectives ---------------------------------------------------------------------------

MAX_TERMS: Final = 16  # terms in one objective
MAX_VECTOR: Final = 8192  # values in one direction
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_LAYER = r"[A-Za-z0-9_.>/-]+?"
_WEIGHT = re.compile(rf"\s*({_NUMBER})\s*\*\s*")
_CHANNEL = re.compile(
    rf"({_LAYER})\s*:\s*(\d+)(?:\s*@\s*(?:(center)|\(\s*(\d+)\s*,\s*(\d+)\s*\)))?",
    re.IGNORECASE,
)
_LAYER_TERM = re.compile(rf"layer\(\s*({_LAYER})\s*\)")
_DIRECTION = re.compile(
    rf"direction\(\s*({_LAYER})\s*,\s*(\[[^\]]*\]|[^,)]+?)\s*(?:,\s*cossim\s*=\s*({_NUMBER})\s*)?\)"
)
_OPERATOR = re.compile(r"\s*([+-])\s*")
OBJECTIVE_HELP: Final = (
    "LAYER:INDEX, LAYER:INDEX@center, LAYER:INDEX@(ROW,COL), layer(LAYER) or "
    "direction(LAYER, FILE.npy), weighted (0.5*...) and joined with + and -"
)
# Reads a direction's FILE into its values (the client's loads .npy files).
VectorLoader = Callable[[str], list[float]]


def _no_files(name: str) -> list[float]:
    raise ContractError(f"direction file {name!r}: give the values inline, [0.1, 0.2, ...]")


def parse_objective(text: str, load_vector: VectorLoader = _no_files) -> pb.Objective:
    """The wire Objective of `text` (see the module's grammar).

    Raises ContractError naming the part that does not parse and the valid forms.
    """
    objective, position, sign = pb.Objective(), 0, 1.0
    text = text.strip()
    if text.startswith("-"):
        sign, position = -1.0, 1
    while True:
        term, position = _parse_term(text, position, load_vector)
        if term.HasField("weight") or sign != 1.0:
            term.weight = sign * (term.weight if term.HasField("weight") else 1.0)
        objective.terms.append(term)
        if len(objective.terms) > MAX_TERMS:
            raise ContractError(f"objective {text!r} has more than {MAX_TERMS} terms", "objectives")
        if position == len(text):
            return objective
        operator = _OPERATOR.match(text, position)
        if operator is None:
            raise ContractError(
                f"objective {text!r}: expected + or - at {text[position:]!r}", "objectives"
            )
        sign, position = (1.0 if operator.group(1) == "+" else -1.0), operator.end()


def _parse_term(
    text: str, position: int, load_vector: VectorLoader
) -> tuple[pb.ObjectiveTerm, int]:
    """One weighted term of `text` from `position`, and where it ends."""
    term = pb.ObjectiveTerm()
    if weight := _WEIGHT.match(text, position):
        term.weight, position = float(weight.group(1)), weight.end()
    position = len(text) - len(text[position:].lstrip())
    if found := _LAYER_TERM.match(text, position):
        term.kind, term.layer = pb.TERM_KIND_LAYER, found.group(1)
    elif found := _DIRECTION.match(text, position):
        term.kind, term.layer = pb.TERM_KIND_DIRECTION, found.group(1)
        term.vector.extend(_vector(found.group(2), load_vector))
        if found.group(3):
            term.cossim_power = float(found.group(3))
    elif found := _CHANNEL.match(text, position):
        layer, index, center, row, column = found.groups()
        term.layer, term.index = layer, _index(int(index))
        term.kind = pb.TERM_KIND_CHANNEL
        if center or row is not None:
            term.kind = pb.TERM_KIND_NEURON
        if row is not None:
            term.position.y, term.position.x = _index(int(row)), _index(int(column))
    else:
        raise ContractError(
            f"objective {text!r}: cannot read {text[position:]!r}; use {OBJECTIVE_HELP}",
            "objectives",
        )
    return term, found.end()


def _index(number: int) -> int:
    if number > MAX_INDEX:
        raise ContractError(f"objective index {number}: indices go up to {MAX_INDEX}", "objectives")
    return number


def _vector(source: str, load_vector: VectorLoader) -> list[float]:
    """A direction's values: inline [a, b, ...] or read from a file."""
    if source.startswith("["):
        try:
            values = [float(v) for v in source[1:-1].split(",") if v.strip()]
        except ValueError as error:
            raise ContractError(f"direction values {source!r}: {error}", "objectives") from error
    else:
        values = load_vector(source.strip())
    if not values or len(values) > MAX_VECTOR:
        raise ContractError(
            f"a direction needs 1..{MAX_VECTOR} values; {source!r} has {len(values)}", "objectives"
        )
    return values


def parse_interpolation(
    text: str, frames: int, load_vector: VectorLoader = _no_files
) -> pb.Interpolation:
    """The wire Interpolation of "A..B" with `frames` frames."""
    depth, split = 0, -1
    for position, char in enumerate(text):
        depth += (char in "([") - (char in ")]")
        if depth == 0 and text.startswith("..", position):
            split = position
            break
    if split < 0:
        raise ContractError(f"interpolation {text!r}: write it START..END", "interpolation")
    return pb.Interpolation(
        start=parse_objective(text[:split], load_vector),
        end=parse_objective(text[split + 2 :], load_vector),
        frames=frames,
    )


# --- addresses ----------------------------------------------------------------------------

_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")


def has_scheme(target: str) -> bool:
    """Whether a gRPC target names its resolver (dns:///name, ipv4:..., unix:...)."""
    return target.startswith(_SCHEMES)


def split_host_port(address: str) -> tuple[str, int]:
    """HOST:PORT, [IPV6]:PORT -> (host without brackets, port)."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or not host:
        raise ContractError(f"address {address!r} is not HOST:PORT ([IPV6]:PORT for IPv6)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ContractError(f"address {address!r}: write an IPv6 host in brackets, [{host}]:{port}")
    if not 0 < int(port) < 65536:
        raise ContractError(f"address {address!r}: port must be 1..65535")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    """(host, port) -> HOST:PORT, bracketing an IPv6 literal ("::1" -> "[::1]:PORT")."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback_host(host: str) -> bool:
    """Whether `host` (a listen address, or a Host header with or without a port) is loopback.

    The server listens on loopback only when its --host is one of these, and
    then its HTTP gateway refuses a Host header naming anything else.
    """
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]").split("]")[0].lower()
    return name in LOOPBACK_NAMES or name.endswith(".localhost")
