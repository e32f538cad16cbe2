"""Which filters a request names: spans and lists checked arithmetically, then listed."""

from filtercast.contract import ContractError, FilterSpan, parse_filter_spec
from filtercast_server.errors import InvalidRequestError
from filtercast_server.params import Limits

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
