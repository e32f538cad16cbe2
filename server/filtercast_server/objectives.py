"""What a picture maximizes: objectives, the targets of a plan, and a batch's loss structure.

An :class:`Objective` is a weighted sum of :class:`Term` s (a channel, a
neuron, a whole layer, a direction, a dense unit), on one layer or several.
A :class:`Target` is one picture to make: an objective, the noise that starts
it, and its :class:`Group` when its rows are coupled (the k pictures of a
diversity group, the frames of an interpolation). A :class:`Structure` is
what one compiled step computes: the (kind, layer) slots of the loss, the
diversity layer and whether frames share their low frequencies. Rows of one
batch share a structure; each row fills the slots with its own data, and a
slot a row does not use has weight 0.

A plain filter request is the channel objective of each filter with the
seeds' loss untouched (:data:`Structure.plain`): same noise, same bytes,
same cache keys as before objectives existed. Nothing here imports TensorFlow;
objective_of reads the wire's Objective message.
"""

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from filtercast import contract
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.errors import InvalidRequestError

TermKind = Literal["channel", "neuron", "layer", "direction", "unit"]
# Tags the noise of objective targets apart from a plain filter's (seed, index).
OBJECTIVE_STREAM = 0x6F626A


@dataclass(frozen=True)
class Term:
    """One term of an objective: what it measures on which layer, times its weight."""

    kind: TermKind
    layer: str
    index: int = 0  # channel (channel, neuron) or unit (unit)
    position: tuple[int, int] | None = None  # neuron: (row, column); None: the centre
    vector: tuple[float, ...] = ()  # direction: one value per channel
    cossim_power: float = 0.0  # direction: 0 plain dot product
    weight: float = 1.0

    def text(self) -> str:
        """The term in the objective grammar (filtercast.contract), weight left out."""
        if self.kind == "layer":
            return f"layer({self.layer})"
        if self.kind == "direction":
            cossim = f", cossim={self.cossim_power:g}" if self.cossim_power else ""
            digest = hashlib.sha256(repr(self.vector).encode()).hexdigest()[:12]
            return f"direction({self.layer}, <{len(self.vector)} values {digest}>{cossim})"
        if self.kind == "neuron":
            where = (
                "center" if self.position is None else f"({self.position[0]},{self.position[1]})"
            )
            return f"{self.layer}:{self.index}@{where}"
        return f"{self.layer}:{self.index}"

    def identity(self) -> str:
        """Everything the term's value depends on, for cache keys (the vector in full)."""
        vector = ",".join(f"{v!r}" for v in self.vector)
        return f"{self.kind}|{self.layer}|{self.index}|{self.position}|{vector}|" + (
            f"{self.cossim_power!r}|{self.weight!r}"
        )


@dataclass(frozen=True)
class Objective:
    """A weighted sum of terms."""

    terms: tuple[Term, ...]

    def text(self) -> str:
        """The objective in the grammar: "block5_conv1:12 - 0.5*block5_conv1:40"."""
        text = ""
        for term in [t for t in self.terms if t.weight] or self.terms[:1]:
            body = term.text() if abs(term.weight) == 1.0 else f"{abs(term.weight):g}*{term.text()}"
            sign = "-" if term.weight < 0 else "+"
            text = (f"{text} {sign} " if text else ("-" if sign == "-" else "")) + body
        return text

    def identity(self) -> str:
        """Every term's identity, for cache keys."""
        return ";".join(term.identity() for term in self.terms)

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers it names, in order of first mention."""
        return tuple(dict.fromkeys(term.layer for term in self.terms))

    def scaled(self, factor: float) -> "Objective":
        """Every weight times `factor`."""
        return Objective(tuple(replace(t, weight=t.weight * factor) for t in self.terms))


@dataclass(frozen=True)
class Group:
    """Rows computed together and coupled: a diversity group or an interpolation."""

    kind: Literal["diversity", "interpolation"]
    size: int
    description: str  # what makes the group: part of each member's cache key
    diversity_layer: str = ""  # diversity: the layer whose Gram matrices must differ
    diversity_weight: float = 0.0


@dataclass(frozen=True)
class Target:
    """One picture: its objective, what keys its noise, and its group (if coupled)."""

    objective: Objective
    noise: tuple[int, ...]  # with the request's seed, keys the start noise and the views
    target: int = 0  # which of the request's objectives
    group: Group | None = None
    member: int = 0  # its place in its group
    # A plain filter (or an objective that is one): the seeds' loss, the filter's noise.
    plain: bool = False

    def identity(self) -> str:
        """What the picture depends on beyond the plan's params and seed, for cache keys."""
        group = "" if self.group is None else f"{self.group.description}#{self.member}"
        return f"{self.objective.identity()}@{self.noise}{group}"


def channel_target(layer: str, index: int) -> Target:
    """A plain filter: the mean activation of channel `index` of `layer`."""
    return Target(Objective((Term("channel", layer, index),)), noise=(index,), plain=True)


def is_filter(objective: Objective) -> bool:
    """Whether `objective` is one channel at weight 1: exactly a plain filter's."""
    return (
        len(objective.terms) == 1
        and objective.terms[0].kind == "channel"
        and (objective.terms[0].weight == 1.0)
    )


def noise_of(*texts: str) -> tuple[int, ...]:
    """Noise keys for an objective target: a 64-bit digest of what it is."""
    digest = hashlib.sha256("\0".join(texts).encode()).digest()
    return (OBJECTIVE_STREAM, int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class Diversity:
    """k differing pictures of each objective (see the proto's Diversity)."""

    k: int
    weight: float = 1.0
    layer: str = ""  # empty: the objective's first term's layer


@dataclass(frozen=True)
class Interpolation:
    """Frames from one objective to another (see the proto's Interpolation)."""

    start: Objective
    end: Objective
    frames: int


@dataclass(frozen=True)
class Slot:
    """One place in a compiled loss: a kind of term on a layer."""

    kind: TermKind
    layer: str


@dataclass(frozen=True)
class Structure:
    """What one compiled step computes (rows of one batch share it)."""

    slots: tuple[Slot, ...]
    plain: bool = False  # the seeds' loss: one channel, no weights (see the module)
    diversity_layer: str | None = None
    shared_low_frequencies: bool = False  # interpolation: frames share them
    pull: str | None = None  # accentuation: the space of the pull to the start image
    layers: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        named = [slot.layer for slot in self.slots]
        if self.diversity_layer:
            named.append(self.diversity_layer)
        object.__setattr__(self, "layers", tuple(dict.fromkeys(named)))

    @property
    def grouped(self) -> bool:
        """Whether rows are coupled within groups."""
        return self.diversity_layer is not None or self.shared_low_frequencies

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (structures live as long as the server)
    def assign(self, objective: Objective) -> list[tuple[int, Term]]:
        """The slot each term of `objective` fills: its kind and layer's, in order."""
        used: Counter[Slot] = Counter()
        placed = []
        for term in objective.terms:
            slot = Slot(term.kind, term.layer)
            matches = [p for p, s in enumerate(self.slots) if s == slot]
            placed.append((matches[used[slot]], term))
            used[slot] += 1
        return placed


def plain_structure(layer: str) -> Structure:
    """The structure of a plain filter request on `layer`."""
    return Structure((Slot("channel", layer),), plain=True)


def structure_of(targets: tuple[Target, ...]) -> Structure:
    """The smallest structure every target fits: each (kind, layer) as often as any needs it."""
    layers = {t.objective.terms[0].layer for t in targets}
    if all(t.plain for t in targets) and len(layers) == 1:
        return plain_structure(layers.pop())
    needed: Counter[Slot] = Counter()
    for target in targets:
        needed |= Counter(Slot(t.kind, t.layer) for t in target.objective.terms)
    slots = tuple(
        slot
        for slot in sorted(needed, key=lambda s: (s.layer, s.kind))
        for _ in range(needed[slot])
    )
    groups = [t.group for t in targets if t.group is not None]
    diversity = next((g.diversity_layer for g in groups if g.kind == "diversity"), None)
    shared = any(g.kind == "interpolation" for g in groups)
    return Structure(slots, diversity_layer=diversity, shared_low_frequencies=shared)


# --- from the wire ------------------------------------------------------------------------

TERM_KINDS: dict[int, TermKind] = {
    pb.TERM_KIND_UNSPECIFIED: "channel",
    pb.TERM_KIND_CHANNEL: "channel",
    pb.TERM_KIND_NEURON: "neuron",
    pb.TERM_KIND_LAYER: "layer",
    pb.TERM_KIND_DIRECTION: "direction",
    pb.TERM_KIND_UNIT: "unit",
}


def objective_of(message: pb.Objective, field: str) -> Objective:
    """A wire Objective as plain values (checked against a model in planning, targets.py)."""
    if len(message.terms) > contract.MAX_TERMS:
        raise InvalidRequestError(
            f"{field} has {len(message.terms)} terms; at most {contract.MAX_TERMS}", field
        )
    terms = []
    for i, term in enumerate(message.terms):
        if term.kind not in TERM_KINDS:
            valid = ", ".join(pb.TermKind.Name(k) for k in TERM_KINDS)
            raise InvalidRequestError(
                f"{field}.terms[{i}].kind {term.kind} is unknown; valid: {valid}", field
            )
        terms.append(
            Term(
                kind=TERM_KINDS[term.kind],
                layer=term.layer,
                index=term.index,
                position=(term.position.y, term.position.x) if term.HasField("position") else None,
                vector=tuple(float(np.float32(v)) for v in term.vector),
                cossim_power=decimal(term.cossim_power),
                weight=decimal(term.weight) if term.HasField("weight") else 1.0,
            )
        )
    return Objective(tuple(terms))


def decimal(value: float) -> float:
    """A float32 from the wire as the decimal the client meant (0.1, not 0.100000001)."""
    return float(np.format_float_positional(np.float32(value)))


def objectives_of(
    request: pb.VisualizeFiltersRequest,
) -> tuple[list[Objective], Diversity | None, Interpolation | None]:
    """The request's objectives, diversity and interpolation as make_plan takes them."""
    objectives = [objective_of(o, f"objectives[{i}]") for i, o in enumerate(request.objectives)]
    diversity = None
    if request.HasField("diversity") and request.diversity.k:
        weight = request.diversity.weight if request.diversity.HasField("weight") else 1.0
        diversity = Diversity(request.diversity.k, decimal(weight), request.diversity.layer)
    interpolation = None
    if request.HasField("interpolation"):
        message = request.interpolation
        interpolation = Interpolation(
            objective_of(message.start, "interpolation.start"),
            objective_of(message.end, "interpolation.end"),
            message.frames,
        )
    return objectives, diversity, interpolation
