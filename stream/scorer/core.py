"""The scorer's decisions, as pure functions: bytes in, events / dead letters / alerts out.

No Kafka or Redis here: the runner hands in consumed messages and the context the store
computed, and gets back what to produce. That keeps every rule below unit-testable and makes
the replay (backtests) run exactly the code the live scorer runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from models.inference import LoadedModel
from schemas import (
    Alert,
    Channel,
    CounterpartyType,
    DecodeError,
    Direction,
    Reason,
    TransactionEvent,
    Typology,
    alert_id_for,
    decode,
)
from schemas.alert import ALERT_ID_HEADER
from schemas.codec import encode
from schemas.features import select_features
from schemas.score import Score
from schemas.story import StoryEntry
from stream.context.results import EventContext, PendingContexts
from stream.kafka.clients import OutgoingMessage
from stream.pipeline.dead_letters import DeadLetter
from stream.pipeline.messages import Incoming, epoch_ms_of, processing_clock_ms

if TYPE_CHECKING:  # records.py needs Redis; these types only name what a batch carries
    from stream.pipeline.records import ScoredRecord


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


Narrate = Callable[[TransactionEvent, EventContext], NarrativeLike]
"""Narrates an event in the light of its context (features and the customer's story)."""
AlertMode = Literal["live", "shadow", "backtest"]


@dataclass(frozen=True, slots=True)
class Decoded:
    incoming: Incoming
    event: TransactionEvent


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


@dataclass(frozen=True)
class BegunBatch:
    """A batch after step 1a (``BatchProcessor.begin``): decoded, claimed, its context
    update submitted to Redis and not yet awaited."""

    batch: list[Incoming]
    model: LoadedModel
    dead: list[DeadLetter]
    kept: list[Decoded]
    recorded: dict[str, ScoredRecord]
    contexts: dict[str, EventContext]
    """The redeliveries' recorded contexts; the rest come from ``pending``."""
    pending: PendingContexts
    started: float
    """``time.perf_counter()`` when the context update began."""


@dataclass(frozen=True)
class PreparedBatch:
    """A batch after step 1 (``BatchProcessor.prepare``): its context is applied and its
    narratives built; what is left is the model call and the outputs."""

    batch: list[Incoming]
    model: LoadedModel
    """The model the narratives were built for: the batch is scored by it even if another
    was promoted meanwhile."""
    dead: list[DeadLetter]
    contexts: dict[str, EventContext]
    recorded: dict[str, ScoredRecord]
    narrated: list[tuple[Decoded, NarrativeLike]]
    reused: dict[str, Scored]
    """Redeliveries scored from their records, by source."""
    to_model: list[tuple[Decoded, NarrativeLike]]

    def restricted(self, keep: Callable[[Incoming], bool]) -> PreparedBatch:
        """The same batch without the events ``keep`` refuses (their partitions moved on)."""
        return PreparedBatch(
            [m for m in self.batch if keep(m)],
            self.model,
            [d for d in self.dead if keep(d.incoming)],
            self.contexts,
            self.recorded,
            [(d, n) for d, n in self.narrated if keep(d.incoming)],
            {k: s for k, s in self.reused.items() if keep(s.decoded.incoming)},
            [(d, n) for d, n in self.to_model if keep(d.incoming)],
        )


@dataclass(frozen=True)
class ModelScores:
    """What step 2 (``BatchProcessor.score``) returns: every model result of a batch - the
    scores, the alerted events' reasons - and the events the model could not score or explain,
    with the reason."""

    done: list[tuple[Decoded, Scored]]
    failed: list[tuple[Decoded, str]]
    explained: list[tuple[Scored, list[Reason]]]
    """Reasons of each alerted event (scored now or from its record)."""
    unexplained: list[tuple[Scored, str]]
    """Alerted events whose explaining failed: dead letters, not alerts without a reason."""
    scored_at: datetime
    """When the model call returned (the alerts' ``scored_at``)."""

    def restricted(self, keep: Callable[[Incoming], bool]) -> ModelScores:
        return ModelScores(
            [(d, s) for d, s in self.done if keep(d.incoming)],
            [(d, r) for d, r in self.failed if keep(d.incoming)],
            [(s, r) for s, r in self.explained if keep(s.decoded.incoming)],
            [(s, r) for s, r in self.unexplained if keep(s.decoded.incoming)],
            self.scored_at,
        )


def _span(ms: float) -> str:
    seconds = ms / 1000
    for unit, size in (("years", 365.25 * 86_400), ("days", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


@dataclass(frozen=True, slots=True)
class EventWindow:
    """Event times accepted around the processing clock (settings ``scorer.event_time_max_*``).

    Ahead: an event dated in the future would become its customer's newest event, and every
    real event after it would be 'late' to the context - one crafted message blinds the
    velocity features of a customer for as long as the key lives. Behind: optional, since a
    backfill legitimately streams old events (docs/scorer.md, "Bad input")."""

    max_ahead_ms: int = 3_600_000
    max_behind_ms: int | None = None

    @classmethod
    def of(cls, max_ahead_s: int, max_behind_s: int | None) -> EventWindow:
        """From the settings ``scorer.event_time_max_ahead_s`` / ``..._behind_s``."""
        return cls(max_ahead_s * 1000, None if max_behind_s is None else max_behind_s * 1000)

    def admits(self, when_ms: int, clock_ms: int) -> bool:
        ahead = when_ms - clock_ms <= self.max_ahead_ms
        return ahead and (self.max_behind_ms is None or clock_ms - when_ms <= self.max_behind_ms)

    def refusal(self, event: TransactionEvent, incoming: Incoming) -> str | None:
        """Why ``event`` is outside the window, or None."""
        clock = processing_clock_ms(incoming)
        when = epoch_ms_of(event.event_time)
        if when - clock > self.max_ahead_ms:
            return (
                f"field 'event_time': {_span(when - clock)} ahead of the processing clock "
                f"(limit {_span(self.max_ahead_ms)}, scorer.event_time_max_ahead_s)"
            )
        if self.max_behind_ms is not None and clock - when > self.max_behind_ms:
            return (
                f"field 'event_time': {_span(clock - when)} behind the processing clock "
                f"(limit {_span(self.max_behind_ms)}, scorer.event_time_max_behind_s)"
            )
        return None


def unexpected(stage: str, error: BaseException) -> str:
    """The reason of a dead letter for an exception nothing expected: the stage and the
    exception's type only (its message may quote the payload)."""
    return f"{stage} failed on this event ({type(error).__name__}); reported as a dead letter"


def decode_batch(
    batch: Sequence[Incoming], window: EventWindow | None = None
) -> tuple[list[Decoded], list[DeadLetter]]:
    """Split a batch into valid events inside the time window and dead letters (each with a
    reason). Nothing a message holds can make this raise: that is a dead letter too."""
    decoded: list[Decoded] = []
    dead: list[DeadLetter] = []
    for incoming in batch:
        try:
            event = decode(TransactionEvent, incoming.value)
            refusal = window.refusal(event, incoming) if window is not None else None
        except DecodeError as error:
            dead.append(DeadLetter(incoming, error.reason, "invalid_event"))
            continue
        except Exception as error:  # noqa: BLE001 - a poison message must not fail its batch
            dead.append(DeadLetter(incoming, unexpected("decoding", error), "unprocessable_event"))
            continue
        if refusal is not None:
            dead.append(DeadLetter(incoming, refusal, "event_time_out_of_window"))
        else:
            decoded.append(Decoded(incoming, event))
    return decoded, dead


_Item = TypeVar("_Item")
_Out = TypeVar("_Out")


def each_guarded(
    items: Sequence[_Item], fn: Callable[[_Item], _Out], stage: str
) -> Iterator[tuple[_Item, _Out | None, str | None]]:
    """(item, result, None), or (item, None, reason) when ``fn`` raised on that item: a per-event
    stage (context op packing, narrating) where one event's content can provoke what no
    validation foresaw. Retriable infrastructure errors are never raised by these stages."""
    for item in items:
        try:
            yield item, fn(item), None
        except Exception as error:  # noqa: BLE001 - one event must not fail its batch
            yield item, None, unexpected(stage, error)


def isolate_failures(
    items: Sequence[_Item],
    fn: Callable[[Sequence[_Item]], list[_Out]],
    stage: str,
    canary: _Item,
) -> tuple[list[tuple[_Item, _Out]], list[tuple[_Item, str]]]:
    """``fn`` over the whole batch (one model call); only when that raises, over each item
    alone, to find the one(s) that make it fail. When every item fails alone, ``canary`` - an
    item known to be good - tells content from a systemic failure: if it passes, the items are
    dead letters; if it fails too, the error is raised (a bug or a broken model, not input)."""
    try:
        return list(zip(items, fn(items), strict=True)), []
    except Exception as error:  # noqa: BLE001 - narrowed down below, re-raised if systemic
        done: list[tuple[_Item, _Out]] = []
        failed: list[tuple[_Item, str]] = []
        for item in items:
            try:
                done.extend(zip([item], fn([item]), strict=True))
            except Exception as item_error:  # noqa: BLE001 - this item is the poison
                failed.append((item, unexpected(stage, item_error)))
        if not done:
            try:
                fn([canary])
            except Exception:  # noqa: BLE001 - the canary fails too: not the input
                raise error from None
        return done, failed


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
    event = scored.event
    body = Score(
        event_id=event.event_id,
        customer_id=event.customer_id,
        event_time=event.event_time,
        score=min(max(round(scored.score, 6), 0.0), 1.0),
        typology=scored.typology,
        model_version=model.version,
        alerted=scored.score >= model.alert_threshold,
    )
    return OutgoingMessage(topic, encode(body), event.customer_id.encode())


def checked_narrative(narrative: NarrativeLike) -> NarrativeLike:
    """``narrative``, or ValueError if its context features are not all finite."""
    if not all(map(math.isfinite, narrative.features)):
        raise ValueError("context features are not all finite")
    return narrative


def predict_scored(
    model: LoadedModel, items: Sequence[tuple[Decoded, NarrativeLike]]
) -> list[Scored]:
    """One model call for ``items``; raises on a non-finite score (a dead letter, not an
    alert nobody can rank)."""
    narratives = [n for _, n in items]
    predictions = model.predict_batch(
        [n.text for n in narratives], model_features(model, narratives)
    )
    probabilities = predictions.typology_probability()
    scored = []
    for (item, narrative), score, typology, probability in zip(
        items, predictions.scores, predictions.typologies, probabilities, strict=True
    ):
        if not (math.isfinite(float(score)) and math.isfinite(float(probability))):
            raise ValueError("the model returned a non-finite score")
        scored.append(Scored(item, narrative, float(score), typology, float(probability)))
    return scored


def canary_event() -> TransactionEvent:
    """A plain card payment every model can score (see ``BatchProcessor._canary``)."""
    return TransactionEvent(
        event_id="riskstream-canary",
        event_time=datetime(2026, 1, 5, 12, 0, tzinfo=UTC),
        customer_id="canary",
        account_id="canary",
        channel=Channel.CARD,
        direction=Direction.OUTBOUND,
        amount_minor=2500,
        currency="USD",
        counterparty_id="canary-merchant",
        counterparty_type=CounterpartyType.MERCHANT,
        country="US",
    )
