"""A consumed message, detached from the client library, and the processing clock it gives.

Every reader of messages builds ``Incoming`` - the scorer's runner from a Kafka message, replays
from a file or topic record, the trainer from a label - and the scorer's decisions, the dead
letters and the replay outputs read it. It lives here rather than in ``stream.scorer.core``
because it depends on nothing of riskstream: this module imports only the standard library, so
``core`` and ``dead_letters`` both import it and no cycle can form.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def epoch_ms_of(moment: datetime) -> int:
    """``moment`` (timezone-aware) in whole milliseconds since the Unix epoch."""
    return (moment - _EPOCH) // _ONE_MS


@dataclass(frozen=True, slots=True)
class Incoming:
    """One consumed message, detached from the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None
    """The broker's timestamp of the input message (producer create time by default)."""
    received_at: datetime
    clock_ms: int | None = None
    """The processing clock the event-time window is judged by, when the message carries no
    broker timestamp to derive it from (a replayed file: see ``processing_clock_ms``)."""

    @property
    def source(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def processing_clock_ms(incoming: Incoming) -> int:
    """When the message entered the stream, as far as the scorer can tell: its broker timestamp
    (the time it was produced - also what a replay of the topic sees, so live and replay judge
    alike), never later than when the scorer read it (a timestamp set in the future must not
    widen the window); the read time when it has none; ``clock_ms`` when the caller set it."""
    if incoming.clock_ms is not None:
        return incoming.clock_ms
    received = epoch_ms_of(incoming.received_at)
    if incoming.timestamp_ms is not None and incoming.timestamp_ms > 0:
        return min(incoming.timestamp_ms, received)
    return received
