"""The scorer's decisions, as pure functions: bytes in, events / dead letters / alerts out.

No Kafka or Redis here: the runner hands in consumed messages and the context the store
computed, and gets back what to produce. That keeps every rule below unit-testable and makes
the replay (backtests) run exactly the code the live scorer runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from models.inference import LoadedModel
from schemas import Alert, DecodeError, Reason, TransactionEvent, Typology, alert_id_for, decode
from schemas.alert import ALERT_ID_HEADER
from schemas.codec import encode
from schemas.common import format_utc
from stream.context.features import ContextFeatures, select_features
from stream.context.story import StoryEntry
from stream.kafka.clients import OutgoingMessage

# Header names on dead letters (the original headers are kept as they were, before these).
H_ERROR = "riskstream.error"
H_ERROR_TYPE = "riskstream.error.type"
H_SOURCE_TOPIC = "riskstream.source.topic"
H_SOURCE_PARTITION = "riskstream.source.partition"
H_SOURCE_OFFSET = "riskstream.source.offset"
H_FAILED_AT = "riskstream.failed.at"
H_ORIGINAL_OMITTED = "riskstream.original.omitted"

# A dead letter must itself be producible: librdkafka refuses records over message.max.bytes
# (1,000,000 by default) and brokers over max.message.bytes (~1 MiB by default) - and a record
# the producer refuses would fail the batch again on every retry and after every restart, a
# poison pill. Originals up to this size (16x the largest message the decoder even parses)
# are copied whole; bigger ones are left at their source position, which the headers name.
DLQ_MAX_ORIGINAL_BYTES: Final = 512 * 1024


class ClauseLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def text(self) -> str: ...


class NarrativeLike(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def clauses(self) -> Sequence[ClauseLike]: ...
    @property
    def features(self) -> Sequence[float]: ...
    @property
    def version(self) -> str: ...
    @property
    def story(self) -> tuple[StoryEntry, ...]: ...


Narrate = Callable[[TransactionEvent, ContextFeatures], NarrativeLike]
AlertMode = Literal["live", "shadow", "backtest"]


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

    @property
    def source(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Decoded:
    incoming: Incoming
    event: TransactionEvent


@dataclass(frozen=True, slots=True)
class DeadLetter:
    incoming: Incoming
    reason: str
    error_type: str


@dataclass(frozen=True, slots=True)
class Scored:
    decoded: Decoded
    narrative: NarrativeLike
    score: float
    typology: Typology
    typology_probability: float

    @property
    def event(self) -> TransactionEvent:
        return self.decoded.event


def decode_batch(batch: Sequence[Incoming]) -> tuple[list[Decoded], list[DeadLetter]]:
    """Split a batch into valid events and dead letters (each with a reason)."""
    decoded: list[Decoded] = []
    dead: list[DeadLetter] = []
    for incoming in batch:
        try:
            decoded.append(Decoded(incoming, decode(TransactionEvent, incoming.value)))
        except DecodeError as error:
            dead.append(DeadLetter(incoming, error.reason, "invalid_event"))
    return decoded, dead


def split_reused_ids(
    decoded: Sequence[Decoded], first_sources: dict[str, str]
) -> tuple[list[Decoded], list[DeadLetter]]:
    """Tell a redelivery from a reused event id.

    ``first_sources`` maps event ids already processed to the source (topic[partition]@offset)
    they were first seen at. The same message delivered again (same source: at-least-once
    reprocessing) is processed again and yields the same outputs. The same event id at another
    source is a different message claiming an id already taken: it is dead-lettered, because
    scoring it would either double-count or silently drop one of the two.
    """
    seen = dict(first_sources)
    keep: list[Decoded] = []
    dead: list[DeadLetter] = []
    for item in decoded:
        source = item.incoming.source
        first = seen.setdefault(item.event.event_id, source)
        if first == source:
            keep.append(item)
        else:
            dead.append(
                DeadLetter(
                    item.incoming,
                    f"duplicate event_id {item.event.event_id!r}: first seen at {first}",
                    "duplicate_event_id",
                )
            )
    return keep, dead


def score_batch(
    model: LoadedModel,
    decoded: Sequence[Decoded],
    contexts: Sequence[ContextFeatures],
    narrate: Narrate,
) -> list[Scored]:
    """Narratives for the events, then one model call for the whole batch."""
    if not decoded:
        return []
    narratives = [narrate(d.event, c) for d, c in zip(decoded, contexts, strict=True)]
    predictions = model.predict_batch(
        [n.text for n in narratives], model_features(model, narratives)
    )
    probabilities = predictions.typology_probability()
    return [
        Scored(d, n, float(s), t, float(p))
        for d, n, s, t, p in zip(
            decoded,
            narratives,
            predictions.scores,
            predictions.typologies,
            probabilities,
            strict=True,
        )
    ]


def model_features(
    model: LoadedModel, narratives: Sequence[NarrativeLike]
) -> NDArray[np.float32] | None:
    """The numeric features ``model`` reads, in its order: narratives carry every feature this
    code computes; a model of an older features version reads a subset, by name. None for a
    text-only model."""
    if not model.hybrid:
        return None
    rows = np.asarray([n.features for n in narratives], dtype=np.float32)
    return select_features(rows, model.feature_names)


def build_alert(
    scored: Scored,
    model: LoadedModel,
    reasons: list[Reason],
    *,
    mode: AlertMode,
    scored_at: datetime,
    emitted_at: datetime,
) -> Alert:
    event = scored.event
    return Alert(
        alert_id=alert_id_for(event.event_id, model.version),
        mode=mode,
        event=event,
        score=min(max(scored.score, 0.0), 1.0),
        threshold=model.alert_threshold,
        typology=scored.typology,
        typology_probability=min(max(scored.typology_probability, 0.0), 1.0),
        reasons=reasons,
        narrative=scored.narrative.text,
        model_version=model.version,
        narrative_version=scored.narrative.version,
        event_time=event.event_time,
        received_at=scored.decoded.incoming.received_at,
        scored_at=scored_at,
        emitted_at=emitted_at,
    )


def alert_message(alert: Alert, topic: str) -> OutgoingMessage:
    # Keyed by customer: one customer's alerts stay in order on one partition.
    return OutgoingMessage(
        topic=topic,
        key=alert.event.customer_id.encode(),
        value=encode(alert),
        headers=((ALERT_ID_HEADER, alert.alert_id.encode()),),
    )


def score_message(scored: Scored, model: LoadedModel, topic: str) -> OutgoingMessage:
    """Every score, for dashboards and threshold studies (`scorer.emit_scores`)."""
    body: dict[str, Any] = {
        "event_id": scored.event.event_id,
        "customer_id": scored.event.customer_id,
        "event_time": format_utc(scored.event.event_time),
        "score": round(scored.score, 6),
        "typology": scored.typology.value,
        "model_version": model.version,
        "alerted": scored.score >= model.alert_threshold,
    }
    return OutgoingMessage(topic, orjson.dumps(body), scored.event.customer_id.encode())


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
    original_headers = source.headers if copied else ((H_ORIGINAL_OMITTED, str(size).encode()),)
    headers = (
        *original_headers,
        (H_ERROR, dead.reason.encode()),
        (H_ERROR_TYPE, dead.error_type.encode()),
        (H_SOURCE_TOPIC, source.topic.encode()),
        (H_SOURCE_PARTITION, str(source.partition).encode()),
        (H_SOURCE_OFFSET, str(source.offset).encode()),
        (H_FAILED_AT, format_utc(failed_at).encode()),
    )
    if not copied:
        return OutgoingMessage(topic=topic, value=None, key=None, headers=headers)
    # A tombstone (None value) stays None: empty bytes would be a different message.
    return OutgoingMessage(topic=topic, value=source.value, key=source.key, headers=headers)


def next_offsets(batch: Sequence[Incoming]) -> dict[tuple[str, int], int]:
    """The offsets to commit after `batch`: one past the highest offset per partition."""
    offsets: dict[tuple[str, int], int] = {}
    for incoming in batch:
        key = (incoming.topic, incoming.partition)
        offsets[key] = max(offsets.get(key, -1), incoming.offset + 1)
    return offsets
