"""What the scorer scored, kept in Redis by event id so late labels can be joined to it.

A label (analyst disposition, chargeback) arrives days or weeks after its event; fine-tuning
needs the narrative and features the model saw then. One record per scored event, written in
one pipelined round trip per batch, expiring after ``scorer.scored_ttl_days``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import redis.exceptions as rexc

from stream.redis_client import AnyRedis
from stream.scorer.errors import ScorerError

SCHEMA: Final = 1


class RecordsUnavailable(ScorerError):
    """Redis did not answer; retriable (the batch is retried, records are idempotent)."""


@dataclass(frozen=True, slots=True)
class ScoredRecord:
    event_id: str
    customer_id: str
    event_time_ms: int
    event: dict[str, Any]
    """The TransactionEvent as JSON-ready data, so narratives can be rebuilt with a new spec."""
    narrative: str
    clause_ids: tuple[str, ...]
    features: tuple[float, ...]
    score: float
    typology: str
    model_version: str
    narrative_version: str
    alert_id: str | None
    scored_at_ms: int
    source: str
    """Where the event was read (topic[partition]@offset): tells a redelivery of the same
    message from a different message reusing its event id."""
    story: str = ""
    """The customer's story behind the narrative (``story.pack_story``, hex), so it can be
    narrated again with another spec."""

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": SCHEMA,
                "event_id": self.event_id,
                "customer_id": self.customer_id,
                "event_time_ms": self.event_time_ms,
                "event": self.event,
                "narrative": self.narrative,
                "clause_ids": self.clause_ids,
                "features": self.features,
                "score": self.score,
                "typology": self.typology,
                "model_version": self.model_version,
                "narrative_version": self.narrative_version,
                "alert_id": self.alert_id,
                "scored_at_ms": self.scored_at_ms,
                "source": self.source,
                "story": self.story,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> ScoredRecord:
        data = orjson.loads(raw)
        data.pop("v", None)
        data["clause_ids"] = tuple(data["clause_ids"])
        data["features"] = tuple(data["features"])
        return cls(**data)


def record_key(namespace: str, event_id: str) -> str:
    # The event id is its own hash tag: records spread over a cluster's slots evenly.
    return f"{namespace}:{{e:{event_id}}}:scored"


class ScoredRecordStore:
    def __init__(self, client: AnyRedis, namespace: str, ttl_s: int) -> None:
        self._client = client
        self._namespace = namespace
        self._ttl_s = ttl_s

    def put_batch(self, records: Sequence[ScoredRecord]) -> None:
        """Write every record in one round trip. Rewriting a record (a retried batch) stores
        the same content again, so retries are harmless."""
        if not records:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for record in records:
                pipe.set(
                    record_key(self._namespace, record.event_id), record.to_bytes(), ex=self._ttl_s
                )
            pipe.execute()
        except (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterDownError) as exc:
            raise RecordsUnavailable(f"Redis unavailable for scored records: {exc}") from exc

    def get_batch(self, event_ids: Sequence[str]) -> list[ScoredRecord | None]:
        """Records by event id, None where unknown or expired."""
        if not event_ids:
            return []
        try:
            pipe = self._client.pipeline(transaction=False)
            for event_id in event_ids:
                pipe.get(record_key(self._namespace, event_id))
            raw_values: list[bytes | None] = pipe.execute()
        except (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterDownError) as exc:
            raise RecordsUnavailable(f"Redis unavailable for scored records: {exc}") from exc
        return [ScoredRecord.from_bytes(raw) if raw else None for raw in raw_values]
