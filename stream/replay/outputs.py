"""What a replay writes besides its output topic: every score, the alerts, the dead letters.

Every score is needed (PR-AUC ranks all events, not only alerted ones), and the live
``BatchProcessor`` already persists one :class:`ScoredRecord` per scored event through its
record store. :class:`ScoreCapture` is that store with a tap: it writes to Redis as usual (the
run's own namespace, where the processor also reads records back to tell a redelivery from a
reused event id) and keeps the batch's records for the run's ``scores.parquet``. So the file
holds what the pipeline scored, not a re-computation.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.dead_letter import (
    H_ERROR,
    H_ERROR_TYPE,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
)
from stream.kafka.clients import OutgoingMessage
from stream.pipeline.messages import Incoming
from stream.pipeline.records import ScoredRecord, ScoredRecordStore
from stream.redis_client import AnyRedis
from stream.replay.manifest import ALERTS_FILE, DEAD_LETTERS_FILE, SCORES_FILE
from stream.replay.sources import to_ms

# Dead letters of a run go to its directory, not to a topic: they belong to the run, and a
# colon cannot occur in a Kafka topic name, so this can never be mistaken for one.
DEAD_LETTERS_TO_FILE: Final = "file:" + DEAD_LETTERS_FILE

_TIME = pa.timestamp("ms", tz="UTC")
SCORES_SCHEMA: Final = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("event_time", _TIME, nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("typology", pa.string(), nullable=False),
        pa.field("alert_id", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("broker_time", _TIME),
        pa.field("received_at", _TIME, nullable=False),
        pa.field("scored_at", _TIME, nullable=False),
    ]
)
# Columns set by the wall clock; everything else is a function of the input and the model.
WALL_CLOCK_COLUMNS: Final = ("received_at", "scored_at")
_ROWS_PER_GROUP = 8192


class ScoreCapture(ScoredRecordStore):
    """The processor's record store, also keeping each successful batch's records."""

    def __init__(self, client: AnyRedis, namespace: str, ttl_s: int) -> None:
        super().__init__(client, namespace, ttl_s)
        self._captured: list[ScoredRecord] = []

    def put_batch(self, records: Sequence[ScoredRecord]) -> None:
        super().put_batch(records)
        self._captured.extend(records)

    def take(self) -> list[ScoredRecord]:
        """The records of the batch just processed (and forget them)."""
        captured, self._captured = self._captured, []
        return captured

    def discard(self) -> None:
        """Forget a failed attempt's records; the retried batch writes them again."""
        self._captured = []


class RunFiles:
    """scores.parquet (in row groups), alerts.jsonl and dead_letters.jsonl of one run."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._scores = pq.ParquetWriter(directory / SCORES_FILE, SCORES_SCHEMA, compression="zstd")
        self._alerts = (directory / ALERTS_FILE).open("wb")
        self._dead = (directory / DEAD_LETTERS_FILE).open("wb")
        self._rows: dict[str, list[Any]] = {name: [] for name in SCORES_SCHEMA.names}
        self._seq = 0

    def add_scores(
        self, records: Sequence[ScoredRecord], batch: Sequence[Incoming], received_at: datetime
    ) -> None:
        broker_ms = {incoming.source: incoming.timestamp_ms for incoming in batch}
        received_ms = to_ms(received_at)
        rows = self._rows
        for record in records:
            rows["seq"].append(self._seq)
            rows["event_id"].append(record.event_id)
            rows["customer_id"].append(record.customer_id)
            rows["event_time"].append(record.event_time_ms)
            rows["score"].append(record.score)
            rows["typology"].append(record.typology)
            rows["alert_id"].append(record.alert_id)
            rows["source"].append(record.source)
            rows["broker_time"].append(broker_ms.get(record.source))
            rows["received_at"].append(received_ms)
            rows["scored_at"].append(record.scored_at_ms)
            self._seq += 1
        if len(rows["seq"]) >= _ROWS_PER_GROUP:
            self._flush_scores()

    def _flush_scores(self) -> None:
        if self._rows["seq"]:
            self._scores.write_table(pa.table(self._rows, schema=SCORES_SCHEMA))
            self._rows = {name: [] for name in SCORES_SCHEMA.names}

    def add_alert(self, message: OutgoingMessage) -> None:
        self._alerts.write((message.value or b"") + b"\n")

    def add_dead_letter(self, message: OutgoingMessage) -> None:
        # the riskstream.* headers come after the original ones, so they win in the dict
        headers = {name: value.decode(errors="replace") for name, value in message.headers}
        entry = {
            "source": f"{headers.get(H_SOURCE_TOPIC)}[{headers.get(H_SOURCE_PARTITION)}]"
            f"@{headers.get(H_SOURCE_OFFSET)}",
            "error": headers.get(H_ERROR, ""),
            "error_type": headers.get(H_ERROR_TYPE, ""),
            # the original bytes, unchanged (they need not be UTF-8 or JSON)
            "value_b64": base64.b64encode(message.value).decode() if message.value else None,
        }
        self._dead.write(orjson.dumps(entry) + b"\n")

    def close(self) -> None:
        try:
            self._flush_scores()
            self._scores.close()
        finally:
            self._alerts.close()
            self._dead.close()
