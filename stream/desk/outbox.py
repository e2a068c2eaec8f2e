"""Dispositions, and the labels they send through the transactional outbox.

A final disposition (suspicious or legitimate) writes the disposition, the alert's new status,
the case's counters, an audit line and exactly one ``outbox`` row in one transaction: either
all of it is in the database or none of it. The label's id is derived from the alert
(``desk-<uuid5(alert id)>``), and an alert takes one final disposition at most, so whatever
happens later a resend carries the same id.

The relay publishes unsent rows in id order and marks them sent after the broker acknowledged
them. The crash window between the two is closed in three ways (docs/desk.md):

1. Before publishing, a row's ``attempted_at`` is committed. A relay that starts (or whose
   last publish ended without a clear answer) first reads ``risk.labels`` from the earliest
   such attempt onwards (committed messages only) and marks every row whose label id it finds
   there as sent: a label the broker took before the crash is never published again.
2. Acknowledged rows the database could not yet mark (PostgreSQL restarting) stay in memory
   and are marked when it answers; they are not published again meanwhile.
3. One relay at a time: it holds a PostgreSQL advisory lock, and after losing it (a database
   restart) it reconciles again before publishing.

Consumers dedupe by label id anyway (the trainer's case store ``HSETNX``es it).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition
from sqlalchemy import Connection, Engine, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from schemas import SUSPICIOUS_TYPOLOGIES, Alert, LabelEvent, LabelSource, Typology, decode, encode
from stream.desk.auth import audit
from stream.desk.database import guarded, utcnow
from stream.desk.errors import DatabaseUnavailable, DispositionRefused
from stream.desk.tables import AlertRow, AlertStatus, Case, Disposition, OutboxRow, User, Verdict
from stream.kafka.clients import OutgoingMessage, TrackedProducer, consumer_config, producer_config
from stream.kafka.errors import KafkaIOError
from stream.settings import Settings

log = logging.getLogger(__name__)

# Never change it: label ids of past dispositions would stop matching their resends.
DESK_LABEL_NAMESPACE = uuid.UUID("0b7e4c8e-2a51-4f0c-9d59-3f1e6a7d2c48")
LABEL_ID_HEADER = "riskstream.label_id"
NOTE_MAX = 1000
# A lock id of our own (any 64-bit number; pg_advisory_lock's key space is per database).
_RELAY_LOCK = 0x5269736B_44657331  # "RiskDes1"
# Producer timestamps come from the relay's clock, broker timestamps (LogAppendTime) from the
# broker's: reconciliation reads from this long before the earliest attempt.
_CLOCK_MARGIN = timedelta(minutes=5)


def label_id_for(alert_id: str) -> str:
    return f"desk-{uuid.uuid5(DESK_LABEL_NAMESPACE, alert_id)}"


def label_for(
    alert: Alert,
    verdict: Verdict,
    typology: Typology,
    note: str | None,
    case_id: int,
    at: datetime,
) -> LabelEvent:
    """The label a final disposition sends. Its time is the disposition's, but never before
    the event (clock skew between scorer and desk must not make the label invalid)."""
    event = alert.event
    return LabelEvent(
        label_id=label_id_for(alert.alert_id),
        event_id=event.event_id,
        customer_id=event.customer_id,
        event_time=event.event_time,
        label_time=max(at, event.event_time),
        source=LabelSource.ANALYST,
        is_suspicious=verdict is Verdict.SUSPICIOUS,
        typology=typology if verdict is Verdict.SUSPICIOUS else Typology.LEGITIMATE,
        counterparty_id=event.counterparty_id,
        terminal_id=event.terminal_id,
        alert_id=alert.alert_id,
        scenario_id=f"desk-case-{case_id}",
        note=note[:NOTE_MAX] if note else None,
    )


def parse_verdict(verdict: str, typology: str | None) -> tuple[Verdict, Typology | None]:
    """Validate a disposition form: suspicious needs a suspicious typology."""
    try:
        chosen = Verdict(verdict)
    except ValueError:
        raise DispositionRefused(f"unknown disposition {verdict!r}") from None
    if chosen is Verdict.SUSPICIOUS:
        try:
            kind = Typology(typology or "")
        except ValueError:
            raise DispositionRefused("a suspicious disposition needs its typology") from None
        if kind not in SUSPICIOUS_TYPOLOGIES:
            raise DispositionRefused(f"{kind.value!r} is not a suspicious typology")
        return chosen, kind
    return chosen, Typology.LEGITIMATE if chosen is Verdict.LEGITIMATE else None


def record_disposition(
    db: Session, user: User, alert_id: str, verdict: str, typology: str | None, note: str | None
) -> Disposition:
    """Record a disposition in the caller's transaction (see the module docstring)."""
    chosen, kind = parse_verdict(verdict, typology)
    note = (note or "").strip()[:NOTE_MAX] or None
    row = db.get(AlertRow, alert_id, with_for_update=True)
    if row is None:
        raise DispositionRefused(f"no alert {alert_id!r}")
    if row.status in (AlertStatus.SUSPICIOUS, AlertStatus.LEGITIMATE):
        raise DispositionRefused(f"alert {alert_id} is already closed as {row.status}")
    now = utcnow()
    disposition = Disposition(
        alert_id=alert_id,
        user_id=user.id,
        verdict=chosen.value,
        typology=(kind or Typology(row.typology)).value,
        note=note,
        created_at=now,
    )
    db.add(disposition)
    db.flush()
    row.status = chosen.value
    if chosen.is_final:
        assert kind is not None
        row.closed_at = now
        alert = decode(Alert, row.payload.encode())
        label = label_for(alert, chosen, kind, note, row.case_id, now)
        db.add(
            OutboxRow(
                disposition_id=disposition.id,
                label_id=label.label_id,
                payload=encode(label),
                created_at=now,
            )
        )
        remaining = Case.open_alerts - 1
        db.execute(
            update(Case)
            .where(Case.id == row.case_id)
            .values(
                open_alerts=remaining,
                updated_at=now,
                status=text("CASE WHEN open_alerts - 1 <= 0 THEN 'closed' ELSE status END"),
                closed_at=text("CASE WHEN open_alerts - 1 <= 0 THEN now() ELSE closed_at END"),
            )
        )
    detail = chosen.value + (f" ({kind.value})" if chosen is Verdict.SUSPICIOUS and kind else "")
    audit(db, user, "alert.disposition", f"alert:{alert_id}", detail)
    return disposition


# -- the relay -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pending:
    id: int
    label_id: str
    payload: bytes


def published_label_ids(
    settings: Settings, since: datetime, wanted: set[str], *, timeout_s: float = 60.0
) -> set[str]:
    """Which of ``wanted`` are on the labels topic (committed) at or after ``since``.

    Reads every partition from the first message at ``since`` to its end. Raises
    :class:`KafkaIOError` when the end is not reached in time: the caller must not publish
    rows it could not account for.
    """
    topic = settings.topics.labels
    consumer = Consumer(
        consumer_config(
            settings.kafka,
            f"riskstream-desk-reconcile-{uuid.uuid4().hex[:8]}",
            overrides={"enable.partition.eof": True},
        )
    )
    found: set[str] = set()
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise KafkaIOError(f"labels topic {topic!r} does not exist")
        start_ms = int((since - _CLOCK_MARGIN).timestamp() * 1000)
        wanted_tps = [TopicPartition(topic, p, start_ms) for p in metadata.topics[topic].partitions]
        starts = consumer.offsets_for_times(wanted_tps, timeout=30)
        consumer.assign(
            [
                TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                for tp in starts
            ]
        )
        open_partitions = {tp.partition for tp in starts}
        deadline = time.monotonic() + timeout_s
        while open_partitions:
            if time.monotonic() > deadline:
                raise KafkaIOError(f"could not read {topic} to its end in {timeout_s:.0f} s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(message.partition())
                elif error.fatal():
                    raise KafkaIOError(f"reading {topic}: {error.str()}")
                continue
            for header in message.headers() or []:
                name, value = header[0], header[1]
                if name == LABEL_ID_HEADER and value is not None:
                    label_id = value.decode() if isinstance(value, bytes) else str(value)
                    if label_id in wanted:
                        found.add(label_id)
    finally:
        consumer.close()
    return found


class OutboxRelay:
    """Publish outbox rows as labels until :meth:`stop` (see the module docstring)."""

    def __init__(self, settings: Settings, engine: Engine, *, retry_s: float = 1.0) -> None:
        self._settings = settings
        self._engine = engine
        self._retry_s = retry_s
        # Uncompressed: labels are a few hundred bytes, and the trainer's aiokafka consumer
        # reads lz4 batches only when an lz4 codec library is installed.
        self._producer = TrackedProducer(
            producer_config(settings.kafka, overrides={"compression.type": "none"})
        )
        self._stopping = threading.Event()
        self._lock: Connection | None = None
        self._needs_reconcile = True
        self._acknowledged: list[int] = []
        self.published = 0
        self.reconciled = 0

    def stop(self) -> None:
        self._stopping.set()

    # -- the advisory lock ---------------------------------------------------------------------

    def _hold_lock(self) -> bool:
        """Whether this relay holds the lock (taking it if free)."""
        if self._lock is not None:
            try:
                self._lock.execute(text("SELECT 1"))
                self._lock.commit()  # never sit "idle in transaction"
                return True
            except SQLAlchemyError:
                log.warning("relay: lost the database connection holding the relay lock")
                self._drop_lock()
        with guarded():
            connection = self._engine.connect()
            try:
                taken = connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": _RELAY_LOCK}
                ).scalar()
                connection.commit()
            except BaseException:
                connection.close()
                raise
        if not taken:
            connection.close()
            return False
        self._lock = connection
        self._needs_reconcile = True  # whoever held it before may have published
        return True

    def _drop_lock(self) -> None:
        if self._lock is not None:
            try:
                self._lock.invalidate()
                self._lock.close()
            except SQLAlchemyError:
                pass
            self._lock = None

    # -- one round -----------------------------------------------------------------------------

    def _mark_sent(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with guarded(), Session(self._engine) as db, db.begin():
            db.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(list(ids)), OutboxRow.sent_at.is_(None))
                .values(sent_at=utcnow())
            )

    def _reconcile(self) -> None:
        with guarded(), Session(self._engine) as db:
            rows = db.execute(
                select(OutboxRow.id, OutboxRow.label_id, OutboxRow.attempted_at).where(
                    OutboxRow.sent_at.is_(None), OutboxRow.attempted_at.is_not(None)
                )
            ).all()
        if rows:
            since = min(r.attempted_at for r in rows if r.attempted_at is not None)
            found = published_label_ids(self._settings, since, {r.label_id for r in rows})
            self._mark_sent([r.id for r in rows if r.label_id in found])
            self.reconciled += len(found)
            log.info(
                "relay: %d of %d attempted label(s) were on %s already; the rest go again",
                len(found),
                len(rows),
                self._settings.topics.labels,
            )
        self._needs_reconcile = False

    def run_once(self) -> int:
        """Publish one batch; the number of labels published."""
        self._mark_sent(self._acknowledged)
        self._acknowledged = []
        if not self._hold_lock():
            return 0
        if self._needs_reconcile:
            self._reconcile()
        with guarded(), Session(self._engine) as db, db.begin():
            pending = [
                _Pending(row.id, row.label_id, row.payload)
                for row in db.execute(
                    select(OutboxRow.id, OutboxRow.label_id, OutboxRow.payload)
                    .where(OutboxRow.sent_at.is_(None))
                    .order_by(OutboxRow.id)
                    .limit(self._settings.desk.relay_batch_max)
                )
            ]
            if not pending:
                return 0
            db.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_([p.id for p in pending]), OutboxRow.attempted_at.is_(None))
                .values(attempted_at=utcnow())
            )
        topic = self._settings.topics.labels
        try:
            self._producer.produce_all(
                [
                    OutgoingMessage(
                        topic,
                        p.payload,
                        orjson.loads(p.payload)["customer_id"].encode(),
                        ((LABEL_ID_HEADER, p.label_id.encode()),),
                    )
                    for p in pending
                ]
            )
            self._producer.flush_or_raise(30.0)
        except KafkaIOError:
            self._needs_reconcile = True  # some may be on the topic: look before resending
            self._producer.forget()
            raise
        self._acknowledged = [p.id for p in pending]
        self.published += len(pending)
        self._mark_sent(self._acknowledged)
        self._acknowledged = []
        return len(pending)

    def run(self) -> None:
        log.info("relay: publishing dispositions to %s", self._settings.topics.labels)
        try:
            while not self._stopping.is_set():
                try:
                    published = self.run_once()
                except DatabaseUnavailable as error:
                    log.warning("relay: %s; retrying in %.1f s", error, self._retry_s)
                    self._stopping.wait(self._retry_s)
                    continue
                except KafkaIOError as error:
                    log.warning("relay: %s; retrying in %.1f s", error, self._retry_s)
                    self._stopping.wait(self._retry_s)
                    continue
                if published == 0:
                    self._stopping.wait(self._settings.desk.relay_idle_s)
        finally:
            self.close()

    def close(self) -> None:
        """Release the relay lock (a crashed process releases it as its connection closes)."""
        self._drop_lock()
        self._producer.poll(0)
