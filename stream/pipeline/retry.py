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
from stream.pipeline.errors import CommitFailed
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


@dataclass(frozen=True)
class RetryPolicy:
    """What a batch loop retries, how long it pauses, and when it gives up.

    The default retries every failure that can pass - and a commit the coordinator could not
    take - until it succeeds or the worker is stopped (a live worker has nothing better to
    do); a bounded job (a replay) gives up after ``max_attempts`` and fails instead."""

    retriable: tuple[type[Exception], ...] = (*INFRASTRUCTURE_ERRORS, CommitFailed)
    backoff: Backoff = BACKOFF
    max_attempts: int | None = None
    """Attempts in all, the first included; None: no limit."""

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def retries(self, error: BaseException) -> bool:
        return isinstance(error, self.retriable)

    def gives_up_after(self, failed_attempts: int) -> bool:
        return self.max_attempts is not None and failed_attempts >= self.max_attempts

    def delay(self, failed_attempts: int) -> float:
        return self.backoff.delay(failed_attempts)
