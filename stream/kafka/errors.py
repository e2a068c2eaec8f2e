"""Errors at the Kafka edge."""

from __future__ import annotations

from stream.errors import StreamError


class KafkaIOError(StreamError):
    """Base of Kafka edge errors."""


class DeliveryFailed(KafkaIOError):
    """Some messages of a batch were not acknowledged by the broker.

    Retriable: the batch's offsets are not committed, so the batch is produced again (the
    alerts' deterministic ids make the repeats recognisable to subscribers).
    """

    def __init__(self, failures: list[str]) -> None:
        shown = "; ".join(failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        super().__init__(f"{len(failures)} message(s) not delivered: {shown}{more}")
        self.failures = failures


class FlushTimeout(KafkaIOError):
    """The producer did not drain within the deadline (broker down or unreachable)."""
