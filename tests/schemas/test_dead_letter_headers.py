"""The typed dead-letter headers: what the scorer writes parses back, whatever the reason."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.dead_letter import H_ERROR, H_ORIGINAL_OMITTED, DeadLetterHeaders
from stream.pipeline.dead_letters import (
    DLQ_MAX_ORIGINAL_BYTES,
    DLQ_MAX_REASON_CHARS,
    DeadLetter,
    dead_letter_message,
)
from stream.pipeline.messages import Incoming

FAILED_AT = datetime(2026, 3, 1, 10, 15, 0, 123000, tzinfo=UTC)


def incoming(value: bytes, headers: tuple[tuple[str, bytes], ...] = ()) -> Incoming:
    return Incoming("tx", 3, 41, b"k", value, headers, None, FAILED_AT)


def test_a_dead_letter_keeps_the_original_headers_first_and_its_own_parse_back() -> None:
    original = (("case", b"one"), (H_ERROR, b"forged by the sender"))
    message = dead_letter_message(
        DeadLetter(incoming(b"{", original), "not JSON", "invalid_event"), "dlq", FAILED_AT
    )
    assert list(message.headers[:2]) == list(original)
    typed = DeadLetterHeaders.from_kafka(list(message.headers))
    assert typed.error == "not JSON"  # ours come last: the forged one is overridden
    assert (typed.source_topic, typed.source_partition, typed.source_offset) == ("tx", 3, 41)
    assert typed.failed_at == FAILED_AT
    assert typed.original_omitted is None
    assert dict(message.headers)["riskstream.failed.at"] == b"2026-03-01T10:15:00.123Z"


def test_an_oversized_original_is_omitted_and_a_huge_reason_is_cut() -> None:
    big = b"x" * (DLQ_MAX_ORIGINAL_BYTES + 1)
    message = dead_letter_message(
        DeadLetter(incoming(big), "r" * (3 * DLQ_MAX_REASON_CHARS), "unprocessable_event"),
        "dlq",
        FAILED_AT,
    )
    assert message.value is None
    typed = DeadLetterHeaders.from_kafka(list(message.headers))
    assert typed.original_omitted == len(big) + len(b"k")
    assert len(typed.error) == DLQ_MAX_REASON_CHARS
    assert dict(message.headers)[H_ORIGINAL_OMITTED] == str(len(big) + 1).encode()
