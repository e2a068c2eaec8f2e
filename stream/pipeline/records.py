"""What the scorer scored, kept in Redis by event id so late labels can be joined to it, and
the claim every event id makes when it is first processed.

A label (analyst disposition, chargeback) arrives days or weeks after its event; fine-tuning
needs the narrative and features the model saw then. One record per scored event, written in
one pipelined round trip per batch, expiring after ``scorer.scored_ttl_days``.

A claim (``SET NX``: atomic, so two scorers cannot both take one id) names the message that
first carried an event id (topic[partition]@offset); it lives as long as the records. It is
what makes event ids unique across the whole namespace, and reprocessing harmless: the same
message again is a redelivery and gets its recorded outputs; another message with the id is a
reuse and a dead letter (docs/scorer.md, "Idempotency").

The scorer and replays write records; the trainer joins labels to them, the desk shows their
features: so they live with the other shared pieces, not in ``stream.scorer``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import redis.cluster
import redis.exceptions as rexc
from redis.crc import key_slot

from schemas import TransactionEvent
from schemas.features import FEATURE_NAMES
from schemas.story import unpack_story
from stream.context.errors import ContextStateLost
from stream.context.keys import marker_key, slot_marker_key
from stream.pipeline.errors import PipelineError
from stream.redis_client import AnyRedis

SCHEMA: Final = 1

# KEYS[1]: the namespace marker of the call's hash slot; then per event its claim key and its
# record key. ARGV[1]: the claims' TTL in seconds; ARGV[i + 1]: the source claiming event i.
# Returns per event what was claimed before ('' if nothing) and its record ('' if none).
_CLAIM_SCRIPT: Final = """#!lua
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('LOST riskstream context marker ' .. KEYS[1] .. ' is missing')
end
local out = {}
for i = 2, #KEYS, 2 do
  local first = redis.call('SET', KEYS[i], ARGV[i / 2 + 1], 'NX', 'GET', 'EX', ARGV[1])
  out[#out + 1] = first or ''
  out[#out + 1] = redis.call('GET', KEYS[i + 1]) or ''
end
return out
"""
_MARKER_MISSING: Final = "riskstream context marker "

# KEYS: the records' keys; ARGV[1]: their TTL in seconds, ARGV[i + 1]: record i. A batch's
# records in one command rather than a pipeline of SETs: redis-py's Python for packing and
# parsing each SET was 8 % of the scorer thread's time without a model (profiled,
# BENCHMARKS.md "Streaming scorer").
_PUT_SCRIPT: Final = """#!lua
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


class RecordsUnavailable(PipelineError):
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
    """Where the event was read (topic[partition]@offset)."""
    typology_probability: float | None = None
    """None in records written before it was kept: such an event is scored again."""
    story: str = ""
    """The customer's story behind the narrative (``story.pack_story``, hex), so it can be
    narrated again with another spec, and a redelivered event gets the same story back."""

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
                "typology_probability": self.typology_probability,
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


def claim_key(namespace: str, event_id: str) -> str:
    return f"{namespace}:{{e:{event_id}}}:claim"


@dataclass(frozen=True, slots=True)
class Claim:
    """What claiming an event id found."""

    first_source: str | None
    """The message that claimed the id before (None: this one claimed it now)."""
    record: ScoredRecord | None
    """The id's scored record, if one was written."""


class ScoredRecordStore:
    def __init__(self, client: AnyRedis, namespace: str, ttl_s: int) -> None:
        self._client = client
        self._namespace = namespace
        self._ttl_s = ttl_s
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        # Loaded at first use: an unknown SHA is NOSCRIPT, which (re)loads it - also after a
        # Redis restart emptied the script cache.
        self._claim_sha = ""
        self._put_sha = ""

    def put_batch(self, records: Sequence[ScoredRecord]) -> None:
        """Write every record in one round trip. Rewriting a record (a retried batch) stores
        the same content again, so retries are harmless."""
        if not records:
            return
        keys = [record_key(self._namespace, record.event_id) for record in records]
        values = [record.to_bytes() for record in records]
        try:
            if self._cluster:
                # Each record has its own hash slot: the cluster pipeline sends each to its node.
                pipe = self._client.pipeline(transaction=False)
                for key, value in zip(keys, values, strict=True):
                    pipe.execute_command("SET", key, value, "EX", self._ttl_s)
                pipe.execute()
                return
            for attempt in (1, 2):
                try:
                    self._client.evalsha(  # type: ignore[union-attr]  # not a cluster here
                        self._put_sha, len(keys), *keys, self._ttl_s, *values
                    )
                except rexc.NoScriptError:
                    if attempt == 2:
                        raise
                    self._put_sha = self._load_script(_PUT_SCRIPT)
                    continue
                return
        except (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterDownError) as exc:
            raise RecordsUnavailable(f"Redis unavailable for scored records: {exc}") from exc

    def claim_batch(self, claims: Sequence[tuple[str, str]]) -> list[Claim]:
        """Claim each (event id, source) unless claimed before, in one round trip; returns
        what each found, with the id's record (read in the same call: a redelivery needs it,
        and a GET of a key that does not exist costs Redis next to nothing).

        Claims are the first thing a batch writes, so they check the context namespace's
        marker first, as the context scripts do: a Redis that lost the namespace receives
        nothing (raises ContextStateLost)."""
        if not claims:
            return []
        by_slot: dict[int, list[int]] = {}
        for index, (event_id, _) in enumerate(claims):
            slot = key_slot(claim_key(self._namespace, event_id).encode()) if self._cluster else 0
            by_slot.setdefault(slot, []).append(index)
        found: list[Claim | None] = [None] * len(claims)
        for attempt in (1, 2):
            try:
                replies = self._run_claims(claims, by_slot)
            except rexc.NoScriptError:
                if attempt == 2:
                    raise
                self._claim_sha = self._load_script(_CLAIM_SCRIPT)
                continue
            except (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterDownError) as exc:
                raise RecordsUnavailable(f"Redis unavailable for event claims: {exc}") from exc
            except rexc.ResponseError as exc:
                if _MARKER_MISSING in str(exc):
                    raise ContextStateLost(
                        f"context namespace {self._namespace!r} lost its marker key: Redis "
                        "restarted without persistence, was flushed or evicted keys, and "
                        "nothing of this batch was written. Restore Redis, or accept that the "
                        "context restarts from nothing (the scorer's --accept-context-loss)."
                    ) from exc
                raise
            for indices, reply in zip(by_slot.values(), replies, strict=True):
                for index, first, raw in zip(indices, reply[0::2], reply[1::2], strict=True):
                    found[index] = Claim(
                        first.decode() if first else None,
                        ScoredRecord.from_bytes(raw) if raw else None,
                    )
            break
        return [claim for claim in found if claim is not None]

    def _run_claims(
        self, claims: Sequence[tuple[str, str]], by_slot: dict[int, list[int]]
    ) -> list[list[bytes]]:
        pipe = self._client.pipeline(transaction=False)
        for slot, indices in by_slot.items():
            marker = (
                slot_marker_key(self._namespace, slot)
                if self._cluster
                else marker_key(self._namespace)
            )
            keys = [marker]
            for index in indices:
                event_id = claims[index][0]
                keys.append(claim_key(self._namespace, event_id))
                keys.append(record_key(self._namespace, event_id))
            sources = [claims[index][1] for index in indices]
            # execute_command: redis-py's cluster pipeline routes EVALSHA by its keys.
            pipe.execute_command(
                "EVALSHA", self._claim_sha, len(keys), *keys, self._ttl_s, *sources
            )
        return list(pipe.execute())

    def _load_script(self, script: str) -> str:
        # RedisCluster.script_load loads on every primary; the stubs lack it.
        sha = self._client.script_load(script)  # type: ignore[union-attr]
        return sha.decode() if isinstance(sha, bytes) else str(sha)

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


def reusable(record: ScoredRecord, event: TransactionEvent) -> bool:
    """A record describes this redelivered event in this feature layout, with its story (one
    written before an upgrade that changed the features, or without a typology probability,
    is not used: the event is processed again, its context recognised by the dedupe memory if
    it can be)."""
    return (
        record.customer_id == event.customer_id
        and len(record.features) == len(FEATURE_NAMES)
        and record.typology_probability is not None
        and story_readable(record.story)
    )


def story_readable(story: str) -> bool:
    """The record's story decodes (``pack_story`` hex; empty: the customer's first event)."""
    try:
        unpack_story(bytes.fromhex(story))
    except (ValueError, TypeError, struct.error):
        return False
    return True
