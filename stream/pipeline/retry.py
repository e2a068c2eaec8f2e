"""One backoff and one list of failures that can pass, for every batch loop.

A failure that can pass is infrastructure being away - Redis (context, scored records) or the
broker (delivery, flush): the batch is retried whole after a pause that doubles per attempt.
Anything else is a bug or a fatal condition and ends the worker without committing, so its
batch is reprocessed elsewhere and nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from stream.context.errors import ContextUnavailable
from stream.kafka.errors import DeliveryFailed, FlushTimeout
from stream.pipeline.records import RecordsUnavailable

INFRASTRUCTURE_ERRORS: Final = (
    ContextUnavailable,
    RecordsUnavailable,
    DeliveryFailed,
    FlushTimeout,
)


@dataclass(frozen=True)
class Backoff:
    """Pause before attempt ``n + 1`` after ``n`` failed: 0.2 s, 0.4 s, ... up to ``max_s``."""

    first_s: float = 0.2
    max_s: float = 5.0

    def delay(self, failed_attempts: int) -> float:
        return min(self.first_s * 2.0 ** max(failed_attempts - 1, 0), self.max_s)


BACKOFF: Final = Backoff()
