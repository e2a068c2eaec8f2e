"""Dead letters: a message that cannot be processed, why, and the record that reports it.

Every worker that consumes input sets a bad message aside the same way - the scorer and replays
(events), the trainer (labels) - so the record on the dead-letter topic has one layout
(``schemas.dead_letter``) whoever wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from schemas.dead_letter import DeadLetterHeaders
from stream.kafka.clients import OutgoingMessage
from stream.pipeline.messages import Incoming

# A dead letter must itself be producible: librdkafka refuses records over message.max.bytes
# (1,000,000 by default) and brokers over max.message.bytes (~1 MiB by default) - and a record
# the producer refuses would fail the batch again on every retry and after every restart, a
# poison pill. Originals up to this size (16x the largest message the decoder even parses)
# are copied whole; bigger ones are left at their source position, which the headers name.
DLQ_MAX_ORIGINAL_BYTES: Final = 512 * 1024
# The reason header is cut to this (the header model's limit); reasons are written by
# riskstream and never quote the payload, so only a pathological one is cut.
DLQ_MAX_REASON_CHARS: Final = 4096


@dataclass(frozen=True, slots=True)
class DeadLetter:
    incoming: Incoming
    reason: str
    error_type: str


def original_size(incoming: Incoming) -> int:
    """Bytes of key, value and headers: what copying the original into a record costs."""
    headers = sum(len(name.encode()) + len(value) for name, value in incoming.headers)
    return len(incoming.key or b"") + len(incoming.value or b"") + headers


def dead_letter_message(dead: DeadLetter, topic: str, failed_at: datetime) -> OutgoingMessage:
    """The original key, value and headers unchanged, plus headers saying what went wrong
    and where the message came from - so it can be inspected and replayed as it was.

    An original over ``DLQ_MAX_ORIGINAL_BYTES`` is not copied (no key, value or original
    headers; ``riskstream.original.omitted`` gives its size): the dead letter then points at
    the source position instead of failing to be produced."""
    source = dead.incoming
    size = original_size(source)
    copied = size <= DLQ_MAX_ORIGINAL_BYTES
    ours = DeadLetterHeaders(
        error=dead.reason[:DLQ_MAX_REASON_CHARS],
        error_type=dead.error_type,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        failed_at=failed_at,
        original_omitted=None if copied else size,
    )
    headers = (*(source.headers if copied else ()), *ours.to_kafka())
    if not copied:
        return OutgoingMessage(topic=topic, value=None, key=None, headers=headers)
    # A tombstone (None value) stays None: empty bytes would be a different message.
    return OutgoingMessage(topic=topic, value=source.value, key=source.key, headers=headers)
