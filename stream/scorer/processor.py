"""One micro-batch through the pipeline: decode, context, narrate, score, explain, persist.

Shared by the live scorer (`runner`) and replays (`stream.replay`), so a backtest runs exactly
the code that production runs; only where batches come from and where outputs go differ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from models.inference import LoadedModel
from models.reasons import explain
from schemas import Alert
from stream.context.features import ContextFeatures
from stream.context.store import ContextStore
from stream.context.story import pack_story
from stream.kafka.clients import OutgoingMessage
from stream.scorer.core import (
    AlertMode,
    Decoded,
    Incoming,
    Narrate,
    Scored,
    alert_message,
    build_alert,
    dead_letter_message,
    decode_batch,
    model_features,
    score_batch,
    score_message,
    split_reused_ids,
)
from stream.scorer.metrics import ScorerMetrics
from stream.scorer.records import ScoredRecord, ScoredRecordStore

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
    ) -> None:
        self._store = store
        self._records = records
        self._narrator = narrator
        self._narrate_cache: dict[str, Narrate] = {}
        self.metrics = metrics
        self._alert_topic = topics.alerts
        self._dlq_topic = topics.dlq
        self._shadow_topic = topics.shadow_alerts or topics.alerts
        self._scores_topic = topics.scores
        self._shadow = shadow
        self._alert_mode = alert_mode
        self._top_reasons = top_reasons

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
        """Everything between consuming a batch and producing its outputs.

        Raises the retriable ContextUnavailable / RecordsUnavailable; calling again with the
        same batch is safe (idempotent context, deterministic alerts, rewritten records)."""
        decoded, dead = decode_batch(batch)
        started = time.perf_counter()
        self._store.follow_model_maturity(model.narrative_spec.get("label_maturity_days"))
        contexts = self._store.update_batch([d.event for d in decoded])
        self.metrics.context_latency.observe(time.perf_counter() - started)

        duplicates = [
            d.event.event_id for d, c in zip(decoded, contexts, strict=True) if c.duplicate
        ]
        first_sources: dict[str, str] = {}
        if duplicates:
            self.metrics.duplicates.inc(len(duplicates))
            for record in self._records.get_batch(duplicates):
                if record is not None and record.source:
                    first_sources[record.event_id] = record.source
        features_by_id = {c.event_id: c.features for c in contexts}
        kept, reused = split_reused_ids(decoded, first_sources)
        dead.extend(reused)

        started = time.perf_counter()
        scored = score_batch(
            model, kept, [features_by_id[d.event.event_id] for d in kept], self._narrate(model)
        )
        self.metrics.model_latency.observe(time.perf_counter() - started)
        scored_at = utc_now()

        outputs = BatchOutputs(scored=len(scored), dead=len(dead))
        alerted = [s for s in scored if s.score >= model.alert_threshold]
        alerts = self._alerts(
            model, alerted, scored_at, self._alert_mode, self._alert_topic, outputs
        )
        self._records.put_batch(self._scored_records(model, scored, alerts, scored_at))
        if self._shadow is not None:
            self._score_shadow(kept, [features_by_id[d.event.event_id] for d in kept], outputs)
        if self._scores_topic is not None:
            outputs.messages.extend(score_message(s, model, self._scores_topic) for s in scored)
        failed_at = utc_now()
        outputs.messages.extend(dead_letter_message(d, self._dlq_topic, failed_at) for d in dead)
        for d in dead:
            self.metrics.dead_letters.labels(d.error_type).inc()
            log.warning("dead letter %s: %s", d.incoming.source, d.reason)
        return outputs

    def _alerts(
        self,
        model: LoadedModel,
        alerted: list[Scored],
        scored_at: datetime,
        mode: AlertMode,
        topic: str,
        outputs: BatchOutputs,
    ) -> dict[str, Alert]:
        if not alerted:
            return {}
        narratives = [s.narrative for s in alerted]
        features = model_features(model, narratives)
        reasons = explain(model, narratives, features, top_k=self._top_reasons)
        emitted_at = utc_now()
        alerts: dict[str, Alert] = {}
        for item, item_reasons in zip(alerted, reasons, strict=True):
            alert = build_alert(
                item, model, item_reasons, mode=mode, scored_at=scored_at, emitted_at=emitted_at
            )
            alerts[item.event.event_id] = alert
            outputs.messages.append(alert_message(alert, topic))
            outputs.alerts.append(alert)
            outputs.incoming_ts_ms.append(item.decoded.incoming.timestamp_ms)
        return alerts

    def _score_shadow(
        self, kept: list[Decoded], contexts: list[ContextFeatures], outputs: BatchOutputs
    ) -> None:
        """The challenger scores the same events; its alerts go only to the shadow topic."""
        assert self._shadow is not None
        shadow = self._shadow
        scored = score_batch(shadow, kept, contexts, self._narrate(shadow))
        alerted = [s for s in scored if s.score >= shadow.alert_threshold]
        shadow_outputs = BatchOutputs()
        self._alerts(
            shadow,
            alerted,
            utc_now(),
            "shadow",
            self._shadow_topic,
            shadow_outputs,
        )
        outputs.messages.extend(shadow_outputs.messages)

    @staticmethod
    def _scored_records(
        model: LoadedModel, scored: list[Scored], alerts: dict[str, Alert], scored_at: datetime
    ) -> list[ScoredRecord]:
        scored_at_ms = int(scored_at.timestamp() * 1000)
        records = []
        for item in scored:
            event = item.event
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
                    story=pack_story(item.narrative.story).hex(),
                )
            )
        return records
