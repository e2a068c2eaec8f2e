"""One micro-batch through the pipeline: decode, claim, context, narrate, score, explain, persist.

Shared by the live scorer (`runner`) and replays (`stream.replay`), so a backtest runs exactly
the code that production runs; only where batches come from and where outputs go differ.

Every message ends scored or dead-lettered, whatever it holds: each step that reads an event's
content (decoding, the time window, context op packing, narrating, the model call, reasons) sets
a failing event aside as a dead letter with a one-line reason, and the rest of the batch goes
on. Only infrastructure errors (Redis, the broker) fail a batch, to be retried whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from models.inference import LoadedModel
from models.reasons import explain
from schemas import (
    Alert,
    Reason,
    Typology,
)
from schemas.features import FEATURE_NAMES, ContextFeatures
from schemas.story import pack_story, unpack_story
from stream.context.results import PendingContexts
from stream.context.store import ContextStore, EventContext
from stream.kafka.clients import OutgoingMessage
from stream.pipeline.dead_letters import DeadLetter, dead_letter_message
from stream.pipeline.messages import Incoming
from stream.pipeline.records import ScoredRecord, ScoredRecordStore, reusable
from stream.scorer.core import (
    AlertMode,
    BegunBatch,
    Decoded,
    EventWindow,
    ModelScores,
    Narrate,
    NarrativeLike,
    PreparedBatch,
    Scored,
    alert_message,
    build_alert,
    canary_event,
    checked_narrative,
    decode_batch,
    each_guarded,
    isolate_failures,
    model_features,
    predict_scored,
    score_message,
)
from stream.scorer.metrics import ScorerMetrics

log = logging.getLogger(__name__)

NarratorFactory = Callable[[LoadedModel], Narrate]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class BatchOutputs:
    messages: list[OutgoingMessage] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    incoming_ts_ms: list[int | None] = field(default_factory=list)
    scored: int = 0
    dead: int = 0


@dataclass(frozen=True)
class OutputTopics:
    alerts: str
    dlq: str
    shadow_alerts: str | None = None
    scores: str | None = None
    """None: scores are not emitted."""


class BatchProcessor:
    def __init__(
        self,
        *,
        store: ContextStore,
        records: ScoredRecordStore,
        narrator: NarratorFactory,
        metrics: ScorerMetrics,
        topics: OutputTopics,
        shadow: LoadedModel | None = None,
        alert_mode: AlertMode = "live",
        top_reasons: int = 3,
        window: EventWindow | None = None,
    ) -> None:
        self._store = store
        self._records = records
        self._narrator = narrator
        self._narrate_cache: dict[str, Narrate] = {}
        self._canaries: dict[str, tuple[Decoded, NarrativeLike]] = {}
        self.metrics = metrics
        self._alert_topic = topics.alerts
        self._dlq_topic = topics.dlq
        self._shadow_topic = topics.shadow_alerts or topics.alerts
        self._scores_topic = topics.scores
        self._shadow = shadow
        self._alert_mode = alert_mode
        self._top_reasons = top_reasons
        self._window = window or EventWindow()

    @property
    def shadow(self) -> LoadedModel | None:
        return self._shadow

    @shadow.setter
    def shadow(self, model: LoadedModel | None) -> None:
        """Between batches only: the challenger that scores in shadow (None: none)."""
        self._shadow = model

    def _narrate(self, model: LoadedModel) -> Narrate:
        if model.version not in self._narrate_cache:
            self._narrate_cache[model.version] = self._narrator(model)
        return self._narrate_cache[model.version]

    def process(self, batch: list[Incoming], model: LoadedModel) -> BatchOutputs:
        """Everything between consuming a batch and producing its outputs, in one call: the
        three steps below back to back (the live scorer overlaps them across batches).

        Raises the retriable ContextUnavailable / RecordsUnavailable; calling again with the
        same batch is safe (claims, idempotent context, recorded outputs, deterministic alert
        ids)."""
        prepared = self.prepare(batch, model)
        return self.finish(prepared, self.score(prepared))

    def prepare(self, batch: list[Incoming], model: LoadedModel) -> PreparedBatch:
        """Step 1, on the caller's thread: decode, claim, update the context in Redis,
        narrate (``begin`` then ``complete``). Calls for one consumer must come in batch
        order - context updates are applied in the order begun. Raises ContextUnavailable /
        RecordsUnavailable (retry with the same batch)."""
        return self.complete(self.begin(batch, model))

    def begin(self, batch: list[Incoming], model: LoadedModel) -> BegunBatch:
        """Step 1a: decode, claim, and hand the context update to Redis without waiting for
        it - the caller can finish an earlier batch while Redis applies this one."""
        with self.metrics.stage("decode"):
            decoded, dead = decode_batch(batch, self._window)
        with self.metrics.stage("claim"):
            kept, recorded, refused = self._claim(decoded)
        dead.extend(refused)
        started = time.perf_counter()
        with self.metrics.stage("context"):
            contexts, pending, failed = self._submit_contexts(model, kept, recorded)
        dead.extend(failed)
        return BegunBatch(batch, model, dead, kept, recorded, contexts, pending, started)

    def complete(self, begun: BegunBatch) -> PreparedBatch:
        """Step 1b: wait for the context update, then narrate."""
        model, dead, contexts = begun.model, list(begun.dead), dict(begun.contexts)
        with self.metrics.stage("context"):
            applied = begun.pending.result()
        self.metrics.context_latency.observe(time.perf_counter() - begun.started)
        duplicates = sum(1 for c in applied if c.duplicate)
        if duplicates:
            self.metrics.duplicates.inc(duplicates)
        contexts.update((c.event_id, c) for c in applied)
        kept = [d for d in begun.kept if d.event.event_id in contexts]

        with self.metrics.stage("narrative"):
            narrated, failed = self._narrated(model, kept, contexts)
            dead.extend(failed)
            reused, to_model = self._split_recorded(model, narrated, begun.recorded)
            self._canary(model)  # built here: ``score`` may run on another thread
        return PreparedBatch(
            begun.batch, model, dead, contexts, begun.recorded, narrated, reused, to_model
        )

    def score(self, prepared: PreparedBatch) -> ModelScores:
        """Step 2, every model call of the batch: scores for the events without a recorded
        score of this model version, then the reasons of the alerted ones (occlusion: more
        model calls); an event that breaks either is set aside. Pure computation on
        ``prepared`` (no Redis, no Kafka, nothing of this processor is written), so it runs
        on the model lane while the caller prepares the next batch - and the model's threads
        are never shared between two calls at once."""
        model = prepared.model
        done: list[tuple[tuple[Decoded, NarrativeLike], Scored]] = []
        failed: list[tuple[tuple[Decoded, NarrativeLike], str]] = []
        if prepared.to_model:
            started = time.perf_counter()
            with self.metrics.stage("model"):
                done, failed = isolate_failures(
                    prepared.to_model,
                    partial(predict_scored, model),
                    "scoring",
                    self._canaries[model.version],
                )
            self.metrics.model_latency.observe(time.perf_counter() - started)
        scored_at = utc_now()
        scored = [*prepared.reused.values(), *(result for _, result in done)]
        with self.metrics.stage("reasons"):
            explained, unexplained = self._explained(
                model, [s for s in scored if s.score >= model.alert_threshold]
            )
        return ModelScores(
            [(item, result) for (item, _), result in done],
            [(item, reason) for (item, _), reason in failed],
            explained,
            unexplained,
            scored_at,
        )

    def finish(
        self,
        prepared: PreparedBatch,
        scores: ModelScores,
        keep: Callable[[Incoming], bool] | None = None,
    ) -> BatchOutputs:
        """Step 3, on the caller's thread: build the alerts from their reasons, persist what
        was scored, and build every output message. ``keep`` drops the events of partitions
        this consumer no longer owns. Raises RecordsUnavailable; calling again with the same
        arguments is safe (nothing of ``prepared`` or ``scores`` is changed)."""
        model = prepared.model
        # Nearly always every partition is still owned: the batch is then not copied.
        if keep is not None and not all(keep(m) for m in prepared.batch):
            prepared, scores = prepared.restricted(keep), scores.restricted(keep)
        dead = list(prepared.dead)
        dead.extend(
            DeadLetter(item.incoming, reason, "unprocessable_event")
            for item, reason in scores.failed
        )
        by_source = dict(prepared.reused)
        by_source.update((item.incoming.source, result) for item, result in scores.done)
        scored = [
            by_source[d.incoming.source]
            for d, _ in prepared.narrated
            if d.incoming.source in by_source
        ]
        scored_at = scores.scored_at

        outputs = BatchOutputs()
        alerts, failed = self._alerts(
            model, scores.explained, scores.unexplained, scored_at, self._alert_mode,
            self._alert_topic, outputs,
        )  # fmt: skip
        if failed:
            dead.extend(failed)
            lost = {d.incoming.source for d in failed}
            scored = [s for s in scored if s.decoded.incoming.source not in lost]
        with self.metrics.stage("records"):
            self._records.put_batch(
                self._scored_records(model, scored, alerts, scored_at, prepared.recorded)
            )
        if self._shadow is not None:
            with self.metrics.stage("shadow"):
                self._score_shadow([s.decoded for s in scored], prepared.contexts, outputs)
        with self.metrics.stage("outputs"):
            if self._scores_topic is not None:
                outputs.messages.extend(score_message(s, model, self._scores_topic) for s in scored)
            outputs.scored, outputs.dead = len(scored), len(dead)
            failed_at = utc_now()
            outputs.messages.extend(
                dead_letter_message(d, self._dlq_topic, failed_at) for d in dead
            )
        for d in dead:
            self.metrics.dead_letters.labels(d.error_type).inc()
            log.warning("dead letter %s: %s", d.incoming.source, d.reason)
        return outputs

    # -- the steps ---------------------------------------------------------------------------

    def _claim(
        self, decoded: list[Decoded]
    ) -> tuple[list[Decoded], dict[str, ScoredRecord], list[DeadLetter]]:
        """Claim each event id for its message. The same message seen again (a redelivery, a
        rewind of offsets) keeps its claim and, once its record was written, its recorded
        context and score; another message with a claimed id is a dead letter, whichever
        customer it names (event ids are unique in the namespace: docs/scorer.md) - also
        within this batch, since claims are taken in the batch's order."""
        claims = self._records.claim_batch([(d.event.event_id, d.incoming.source) for d in decoded])
        kept: list[Decoded] = []
        recorded: dict[str, ScoredRecord] = {}
        dead: list[DeadLetter] = []
        for item, claim in zip(decoded, claims, strict=True):
            source, first = item.incoming.source, claim.first_source
            if first is not None and first != source:
                reason = f"duplicate event_id {item.event.event_id!r}: first seen at {first}"
                dead.append(DeadLetter(item.incoming, reason, "duplicate_event_id"))
                continue
            kept.append(item)
            record = claim.record
            if first is not None and record is not None and reusable(record, item.event):
                recorded[item.event.event_id] = record
        if recorded:
            self.metrics.duplicates.inc(len(recorded))
        return kept, recorded, dead

    def _submit_contexts(
        self, model: LoadedModel, kept: list[Decoded], recorded: dict[str, ScoredRecord]
    ) -> tuple[dict[str, EventContext], PendingContexts, list[DeadLetter]]:
        """Each event's context: the recorded one (features and story) for a redelivery whose
        record was written, otherwise from the context store (which recognises the rest of a
        redelivered batch by its dedupe memory, story included) - submitted, not awaited.
        Counterparty risk follows the label maturity ``model`` was trained with."""
        contexts = {
            event_id: EventContext(
                event_id,
                ContextFeatures._make(record.features),
                True,
                unpack_story(bytes.fromhex(record.story)),
            )
            for event_id, record in recorded.items()
        }
        dead: list[DeadLetter] = []
        pending: list[Decoded] = []
        prepared = []
        to_apply = [d for d in kept if d.event.event_id not in recorded]
        for item, ops, reason in each_guarded(
            to_apply, lambda d: self._store.prepare(d.event), "context op packing"
        ):
            if reason is not None or ops is None:
                dead.append(DeadLetter(item.incoming, reason or "", "unprocessable_event"))
            else:
                pending.append(item)
                prepared.append(ops)
        self._store.follow_model_maturity(model.narrative_spec.get("label_maturity_days"))
        submitted = self._store.submit_batch([d.event for d in pending], prepared)
        return contexts, submitted, dead

    def _narrated(
        self, model: LoadedModel, kept: list[Decoded], contexts: dict[str, EventContext]
    ) -> tuple[list[tuple[Decoded, NarrativeLike]], list[DeadLetter]]:
        """Each event's narrative; an event that breaks the narrator is set aside."""
        narrate = self._narrate(model)
        dead: list[DeadLetter] = []
        narrated: list[tuple[Decoded, NarrativeLike]] = []
        for item, narrative, reason in each_guarded(
            kept,
            lambda d: checked_narrative(narrate(d.event, contexts[d.event.event_id])),
            "narrating",
        ):
            if reason is not None or narrative is None:
                dead.append(DeadLetter(item.incoming, reason or "", "unprocessable_event"))
            else:
                narrated.append((item, narrative))
        return narrated, dead

    @staticmethod
    def _split_recorded(
        model: LoadedModel,
        narrated: list[tuple[Decoded, NarrativeLike]],
        recorded: dict[str, ScoredRecord],
    ) -> tuple[dict[str, Scored], list[tuple[Decoded, NarrativeLike]]]:
        """A redelivered event keeps its recorded score of this model version; the rest go to
        the model."""
        reused: dict[str, Scored] = {}
        to_model: list[tuple[Decoded, NarrativeLike]] = []
        for item, narrative in narrated:
            record = recorded.get(item.event.event_id)
            if record is not None and record.model_version == model.version:
                reused[item.incoming.source] = Scored(
                    item,
                    narrative,
                    record.score,
                    Typology(record.typology),
                    record.typology_probability or 0.0,
                )
            else:
                to_model.append((item, narrative))
        return reused, to_model

    def _canary(self, model: LoadedModel) -> tuple[Decoded, NarrativeLike]:
        """A plain event and its narrative, known to score: tells a poison input from a
        broken model when a model call fails on every event of a batch."""
        if model.version not in self._canaries:
            event = canary_event()
            zeros = EventContext(
                event.event_id, ContextFeatures._make([0.0] * len(FEATURE_NAMES)), False
            )
            incoming = Incoming("canary", 0, 0, None, None, (), None, utc_now())
            narrative = self._narrate(model)(event, zeros)
            self._canaries[model.version] = (Decoded(incoming, event), narrative)
        return self._canaries[model.version]

    def _explained(
        self, model: LoadedModel, alerted: list[Scored]
    ) -> tuple[list[tuple[Scored, list[Reason]]], list[tuple[Scored, str]]]:
        """The reasons of each alerted event; an event whose explaining fails is set aside."""
        if not alerted:
            return [], []
        canary_item, canary_narrative = self._canary(model)
        canary = Scored(canary_item, canary_narrative, 1.0, Typology.LEGITIMATE, 1.0)
        return isolate_failures(
            alerted, partial(self._explain, model), "explaining the alert", canary
        )

    def _alerts(
        self,
        model: LoadedModel,
        explained: Sequence[tuple[Scored, list[Reason]]],
        unexplained: Sequence[tuple[Scored, str]],
        scored_at: datetime,
        mode: AlertMode,
        topic: str,
        outputs: BatchOutputs,
    ) -> tuple[dict[str, Alert], list[DeadLetter]]:
        emitted_at = utc_now()
        alerts: dict[str, Alert] = {}
        for item, item_reasons in explained:
            alert = build_alert(
                item, model, item_reasons, mode=mode, scored_at=scored_at, emitted_at=emitted_at
            )
            alerts[item.event.event_id] = alert
            outputs.messages.append(alert_message(alert, topic))
            outputs.alerts.append(alert)
            outputs.incoming_ts_ms.append(item.decoded.incoming.timestamp_ms)
        dead = [DeadLetter(s.decoded.incoming, r, "unprocessable_event") for s, r in unexplained]
        return alerts, dead

    def _explain(self, model: LoadedModel, items: Sequence[Scored]) -> list[list[Reason]]:
        narratives = [s.narrative for s in items]
        features = model_features(model, narratives)
        scores = [s.score for s in items]  # what the alerts carry: not scored again
        return explain(model, narratives, features, top_k=self._top_reasons, scores=scores)

    def _score_shadow(
        self, kept: list[Decoded], contexts: dict[str, EventContext], outputs: BatchOutputs
    ) -> None:
        """The challenger scores the same events; its alerts go only to the shadow topic. An
        event the challenger cannot score is skipped (and logged): the champion scored it."""
        assert self._shadow is not None
        shadow = self._shadow
        narrate = self._narrate(shadow)
        pairs = [
            (item, narrative)
            for item, narrative, reason in each_guarded(
                kept,
                lambda d: checked_narrative(narrate(d.event, contexts[d.event.event_id])),
                "shadow",
            )
            if reason is None and narrative is not None
        ]
        done, failed = isolate_failures(
            pairs, partial(predict_scored, shadow), "shadow scoring", self._canary(shadow)
        )
        for (item, _), reason in failed:
            log.warning("shadow model skipped %s: %s", item.incoming.source, reason)
        alerted = [s for _, s in done if s.score >= shadow.alert_threshold]
        shadow_outputs = BatchOutputs()
        explained, unexplained = self._explained(shadow, alerted)
        _, failed_alerts = self._alerts(
            shadow, explained, unexplained, utc_now(), "shadow", self._shadow_topic, shadow_outputs
        )
        for letter in failed_alerts:
            log.warning("shadow alert skipped %s: %s", letter.incoming.source, letter.reason)
        outputs.messages.extend(shadow_outputs.messages)

    @staticmethod
    def _scored_records(
        model: LoadedModel,
        scored: list[Scored],
        alerts: dict[str, Alert],
        scored_at: datetime,
        recorded: dict[str, ScoredRecord],
    ) -> list[ScoredRecord]:
        """A record per scored event; a redelivery scored by its recorded score keeps its
        record as it was (written again unchanged: a replay's capture reads what is written)."""
        scored_at_ms = int(scored_at.timestamp() * 1000)
        records = []
        for item in scored:
            event = item.event
            previous = recorded.get(event.event_id)
            if previous is not None and previous.model_version == model.version:
                records.append(previous)
                continue
            alert = alerts.get(event.event_id)
            records.append(
                ScoredRecord(
                    event_id=event.event_id,
                    customer_id=event.customer_id,
                    event_time_ms=int(event.event_time.timestamp() * 1000),
                    event=event.model_dump(mode="json", exclude_none=True),
                    narrative=item.narrative.text,
                    clause_ids=tuple(c.id for c in item.narrative.clauses),
                    features=tuple(item.narrative.features),
                    score=item.score,
                    typology=item.typology.value,
                    model_version=model.version,
                    narrative_version=item.narrative.version,
                    alert_id=alert.alert_id if alert else None,
                    scored_at_ms=scored_at_ms,
                    source=item.decoded.incoming.source,
                    typology_probability=item.typology_probability,
                    story=pack_story(item.narrative.story).hex(),
                )
            )
        return records
