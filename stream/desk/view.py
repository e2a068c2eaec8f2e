"""Pure helpers that shape what the alert page shows (unit-tested without a server)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from schemas import Reason
from schemas.features import FEATURE_NAMES
from stream.alerts.view import format_amount
from stream.pipeline.records import RecordsUnavailable, ScoredRecord, ScoredRecordStore

log = logging.getLogger(__name__)

__all__ = ["Segment", "context_features", "format_amount", "highlight", "read_record"]


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    reason: Reason | None = None
    """The reason clause this piece of the narrative is, if it is one."""


def highlight(narrative: str, reasons: Sequence[Reason]) -> list[Segment]:
    """The narrative cut into pieces, each reason clause's text its own piece (the first
    occurrence; a clause the narrative does not contain is left out, never invented)."""
    spans: list[tuple[int, int, Reason]] = []
    for reason in sorted(reasons, key=lambda r: -r.weight):
        if not reason.text:
            continue
        start = narrative.find(reason.text)
        while start >= 0 and any(s < start + len(reason.text) and start < e for s, e, _ in spans):
            start = narrative.find(reason.text, start + 1)
        if start >= 0:
            spans.append((start, start + len(reason.text), reason))
    segments: list[Segment] = []
    cursor = 0
    for start, end, reason in sorted(spans, key=lambda s: s[0]):
        if start > cursor:
            segments.append(Segment(narrative[cursor:start]))
        segments.append(Segment(narrative[start:end], reason))
        cursor = end
    if cursor < len(narrative):
        segments.append(Segment(narrative[cursor:]))
    return segments


def read_record(store: ScoredRecordStore | None, event_id: str) -> ScoredRecord | None:
    """The scorer's record of the event (context features, narrative), or None when Redis is
    away or the record expired: the page then says so instead of failing."""
    if store is None:
        return None
    try:
        return store.get_batch([event_id])[0]
    except (RecordsUnavailable, ValueError, KeyError, TypeError) as error:
        log.warning("scored record of %s unavailable: %s", event_id, error)
        return None


def context_features(record: ScoredRecord | None) -> list[tuple[str, float]]:
    """(name, value) of the features the model saw, when the record's layout is this code's."""
    if record is None or len(record.features) != len(FEATURE_NAMES):
        return []
    return list(zip(FEATURE_NAMES, record.features, strict=True))
