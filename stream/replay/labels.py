"""Labels revealed to a replay as they would have arrived, never from the future.

A label (chargeback, confirmed case, analyst disposition) became known at its ``label_time``;
a replay adds a configurable ``reveal_delay`` on top (labels reach the scorer's context after
some processing lag in production, and risk teams want to ask "what if they came a week
later?"). The replay keeps an event-time clock - the newest event time it has released - and
before each batch applies every label whose ``label_time + reveal_delay`` is at or before the
clock's value after that batch.

Applying a label that early in the batch is safe: the context store counts a label for an event
only if the label's time is at or before the event's own time (``labels.lua`` scores each label
by its time), so the batch's earlier events cannot see it. That makes the outcome independent
of batch boundaries. For the same reason each label is applied with its ``label_time`` moved to
the reveal time: with a delay, the store must count it from when the replay says it arrived,
not from when it was originally known.

Same rule as ``models.dataset`` (which applies labels timed at or before a chunk's first
event), plus the delay.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

from schemas import DecodeError, LabelEvent, decode
from stream.replay.errors import LabelSourceError, SourceError
from stream.replay.sources import JSONL_SUFFIXES, PARQUET_SUFFIXES, TopicSource, parquet_row_json
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)


class LabelSchedule:
    """Labels ordered by reveal time; :meth:`due` hands out each one once."""

    def __init__(self, labels: Iterable[LabelEvent], reveal_delay: timedelta) -> None:
        if reveal_delay < timedelta(0):
            raise ValueError("the label reveal delay must not be negative")
        self.reveal_delay = reveal_delay
        unique: dict[str, LabelEvent] = {}
        for label in labels:
            # one label id, one label: the earliest-known copy (a topic may hold repeats)
            known = unique.get(label.label_id)
            if known is None or label.label_time < known.label_time:
                unique[label.label_id] = label
        self._pending = sorted(unique.values(), key=lambda lb: (lb.label_time, lb.label_id))
        self._next = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def revealed(self) -> int:
        return self._next

    def reveal_time(self, label: LabelEvent) -> datetime:
        return label.label_time + self.reveal_delay

    def due(self, clock: datetime) -> list[LabelEvent]:
        """Labels revealed at or before ``clock`` and not handed out yet, each with its
        ``label_time`` set to its reveal time."""
        start = self._next
        while (
            self._next < len(self._pending) and self.reveal_time(self._pending[self._next]) <= clock
        ):
            self._next += 1
        return [
            label.model_copy(update={"label_time": self.reveal_time(label)})
            for label in self._pending[start : self._next]
        ]


def _decoded(values: Iterable[tuple[str, bytes | None]]) -> Iterator[LabelEvent]:
    skipped = 0
    for where, value in values:
        try:
            yield decode(LabelEvent, value)
        except DecodeError as error:
            skipped += 1
            if skipped <= 3:
                log.warning("skipping an invalid label at %s: %s", where, error.reason)
    if skipped:
        log.warning("skipped %d invalid label(s) in all", skipped)


def read_label_file(path: Path) -> list[LabelEvent]:
    """LabelEvents from a JSONL or Parquet file (e.g. a simulator's labels.jsonl)."""
    if not path.is_file():
        raise LabelSourceError(f"{path} is not a file")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return list(_decoded((f"{path.name}:{i}", parquet_row_json(r)) for i, r in enumerate(rows)))
    if suffix not in JSONL_SUFFIXES:
        raise LabelSourceError(f"{path}: expected a .jsonl or .parquet file")
    with path.open("rb") as file:
        lines = [(f"{path.name}:{n}", line.strip()) for n, line in enumerate(file, 1)]
    return list(_decoded((where, line) for where, line in lines if line))


def read_label_topic(
    kafka: KafkaSettings, topic: str, *, timeout_s: float = 60.0
) -> list[LabelEvent]:
    """Every label on ``topic`` up to its end when called (labels are few: a share of events).
    Read without a consumer group commit; the schedule decides when each one counts."""
    try:
        source = TopicSource(
            kafka,
            topic,
            group_id=f"riskstream-replay-labels-{uuid.uuid4().hex[:8]}",
            stall_timeout_s=timeout_s,
        )
    except SourceError as error:
        raise LabelSourceError(f"label {error}") from error
    try:
        return list(_decoded((record.source, record.value) for record in source.records()))
    except SourceError as error:
        raise LabelSourceError(f"label {error}") from error
    finally:
        source.close()
