"""Alert intake: every alert on ``risk.alerts`` stored once, grouped into cases.

The consumer reads committed data only (alerts of an aborted exactly-once transaction never
arrive) and commits its offsets after the batch's database transaction committed, so a crash
re-reads at most one batch. Storing is idempotent by alert id (``INSERT ... ON CONFLICT DO
NOTHING``): a redelivered alert, a re-read batch or an at-least-once duplicate changes nothing,
and case counters move only for the rows that were really inserted (``RETURNING``).

An alert joins the open case of its customer and scenario (the alert's typology), or opens
one; a partial unique index keeps it to one open case per pair even with several intakes.
A message that is not a valid alert is kept in ``intake_rejects`` with the reason.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from psycopg import sql
from sqlalchemy import Engine, Table, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from schemas import Alert, DecodeError, decode
from stream.desk.database import guarded, utcnow
from stream.desk.errors import DatabaseUnavailable
from stream.desk.tables import AlertRow, AlertStatus, Case, IntakeReject
from stream.kafka.clients import consumer_config
from stream.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Received:
    """One message read from the alert topic."""

    raw: bytes | None
    source: str  # topic[partition]@offset


@dataclass(frozen=True, slots=True)
class StoreResult:
    stored: int
    duplicates: int
    rejected: int


def alert_values(
    alert: Alert, raw: bytes, source: str, case_id: int, now: datetime
) -> dict[str, object]:
    """The ``alerts`` row of one alert: the payload as received plus the queue's columns."""
    return {
        "alert_id": alert.alert_id,
        "case_id": case_id,
        "customer_id": alert.event.customer_id,
        "event_id": alert.event.event_id,
        "typology": alert.typology.value,
        "score": alert.score,
        "threshold": alert.threshold,
        "model_version": alert.model_version,
        "mode": alert.mode,
        "amount_minor": alert.event.amount_minor,
        "currency": alert.event.currency,
        "event_time": alert.event_time,
        "emitted_at": alert.emitted_at,
        "stored_at": now,
        "status": AlertStatus.OPEN.value,
        "source": source[:300],
        "payload": raw.decode("utf-8"),
    }


_CASES: Table = Case.__table__  # type: ignore[assignment]  # declared classes map Tables
# Statements built once and run with a list of parameter sets: SQLAlchemy sends them as a few
# multi-row statements (insertmanyvalues) or one psycopg pipeline, and caches their compilation;
# a VALUES list built per batch cost ~0.5 s of compiling for 500 rows.
_NEW_CASE = insert(_CASES).on_conflict_do_nothing(
    index_elements=["customer_id", "typology"],
    # A literal, as in the index: a bound parameter would not match it once psycopg
    # prepares the statement (from its fifth run).
    index_where=text("status = 'open'"),
)
_COUNT_ALERTS = (
    update(_CASES)
    .where(_CASES.c.id == bindparam("b_case"))
    .values(
        alert_count=_CASES.c.alert_count + bindparam("b_count"),
        open_alerts=_CASES.c.open_alerts + bindparam("b_count"),
        max_score=func.greatest(_CASES.c.max_score, bindparam("b_top")),
        updated_at=bindparam("b_now"),
    )
)


def _insert_alerts(db: Session, rows: list[dict[str, object]]) -> list[tuple[int, float]]:
    """Insert the rows that are new, returning (case id, score) of each inserted one.

    COPY into a per-connection temporary table, then one INSERT ... SELECT ... ON CONFLICT: the
    rows travel in PostgreSQL's bulk format instead of as thousands of bound parameters, which
    is what lets one intake keep up with thousands of alerts a second."""
    driver = db.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS intake_batch "
            "(LIKE alerts INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        columns = list(rows[0])
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        with cursor.copy(sql.SQL("COPY intake_batch ({}) FROM STDIN").format(names)) as copy:
            for row in rows:
                copy.write_row([row[name] for name in columns])
        cursor.execute(
            sql.SQL(
                "INSERT INTO alerts ({0}) SELECT {0} FROM intake_batch "
                "ON CONFLICT (alert_id) DO NOTHING RETURNING case_id, score"
            ).format(names)
        )
        inserted = [(int(case_id), float(score)) for case_id, score in cursor.fetchall()]
        cursor.execute("TRUNCATE intake_batch")  # the transaction goes on (the cases' update)
    return inserted


def _open_cases(
    db: Session, scenarios: set[tuple[str, str]], now: datetime
) -> dict[tuple[str, str], int]:
    """The open case of each (customer, typology), opening the missing ones; rows locked until
    the transaction ends, so a concurrent disposition cannot close a case under us."""
    connection = db.connection()
    found: dict[tuple[str, str], int] = {}
    for _ in range(3):  # a case closed between our insert and select is opened again
        missing = scenarios - found.keys()
        if not missing:
            return found
        connection.execute(
            _NEW_CASE,
            [
                {
                    "customer_id": c,
                    "typology": t,
                    "status": "open",
                    "opened_at": now,
                    "updated_at": now,
                    "alert_count": 0,
                    "open_alerts": 0,
                    "max_score": 0.0,
                }
                for c, t in sorted(missing)
            ],
        )
        rows = connection.execute(
            select(_CASES.c.id, _CASES.c.customer_id, _CASES.c.typology)
            .where(
                _CASES.c.status == "open", _CASES.c.customer_id.in_(sorted({c for c, _ in missing}))
            )
            .order_by(_CASES.c.id)
            .with_for_update()
        )
        for case_id, customer_id, typology in rows:
            if (customer_id, typology) in missing:
                found[(customer_id, typology)] = case_id
    raise DatabaseUnavailable("could not find or open the cases of a batch (kept closing)")


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    alerts: list[tuple[Alert, bytes, str]]
    """The first copy of each alert id in the batch: (alert, raw bytes, source)."""
    rejects: list[tuple[Received, str]]
    """Messages that are not alerts, with the reason."""
    repeats: int
    """Copies of an alert id already in the batch."""


def decode_batch(messages: Sequence[Received]) -> DecodedBatch:
    """Validate every message as an Alert (no I/O: the intake does this while the database
    writes the previous batch)."""
    alerts: dict[str, tuple[Alert, bytes, str]] = {}
    rejects: list[tuple[Received, str]] = []
    for message in messages:
        try:
            alert = decode(Alert, message.raw)
        except DecodeError as error:
            log.warning(
                "alert message at %s is not a valid alert: %s", message.source, error.reason
            )
            rejects.append((message, error.reason))
            continue
        assert message.raw is not None
        alerts.setdefault(alert.alert_id, (alert, message.raw, message.source))
    return DecodedBatch(list(alerts.values()), rejects, len(messages) - len(rejects) - len(alerts))


def store_alerts(db: Session, messages: Sequence[Received]) -> StoreResult:
    """Store a batch of alert messages in the caller's transaction."""
    return store_decoded(db, decode_batch(messages))


def store_decoded(db: Session, batch: DecodedBatch) -> StoreResult:
    """Store a decoded batch in the caller's transaction."""
    now = utcnow()
    for message, reason in batch.rejects:
        db.add(
            IntakeReject(source=message.source[:300], reason=reason, raw=message.raw, stored_at=now)
        )
    rejected, duplicates = len(batch.rejects), batch.repeats
    alerts = {alert.alert_id: (alert, raw, source) for alert, raw, source in batch.alerts}
    if not alerts:
        return StoreResult(0, duplicates, rejected)
    known = set(db.scalars(select(AlertRow.alert_id).where(AlertRow.alert_id.in_(list(alerts)))))
    new = [item for alert_id, item in alerts.items() if alert_id not in known]
    duplicates += len(known)
    if not new:
        return StoreResult(0, duplicates, rejected)
    cases = _open_cases(db, {(a.event.customer_id, a.typology.value) for a, _, _ in new}, now)
    rows = [
        alert_values(a, raw, source, cases[(a.event.customer_id, a.typology.value)], now)
        for a, raw, source in new
    ]
    inserted = _insert_alerts(db, rows)
    connection = db.connection()
    per_case: dict[int, tuple[int, float]] = {}
    for case_id, score in inserted:
        count, top = per_case.get(case_id, (0, 0.0))
        per_case[case_id] = (count + 1, max(top, score))
    if per_case:
        connection.execute(
            _COUNT_ALERTS,
            [
                {"b_case": c, "b_count": n, "b_top": top, "b_now": now}
                for c, (n, top) in sorted(per_case.items())
            ],
        )
    duplicates += len(new) - len(inserted)
    return StoreResult(len(inserted), duplicates, rejected)


def _source(message: Message) -> str:
    return f"{message.topic()}[{message.partition()}]@{message.offset()}"


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (str(message.topic()), int(message.partition() or 0))
        last[key] = max(last.get(key, -1), int(message.offset() or 0))
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


_Work = tuple[DecodedBatch, list[TopicPartition]] | None


class IntakeWorker:
    """Consume alerts into the database until :meth:`stop`; one transaction per batch.

    Two threads: this one polls and decodes, a writer stores. While the database writes batch
    N, batch N+1 is decoded; offsets are committed here, in order, once their batch is stored.
    """

    def __init__(self, settings: Settings, engine: Engine, *, retry_s: float = 1.0) -> None:
        self._settings = settings
        self._engine = engine
        self._retry_s = retry_s
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self.stored = 0

    def stop(self) -> None:
        self._stopping.set()

    def _store(self, batch: DecodedBatch) -> StoreResult:
        while True:
            try:
                with guarded(), Session(self._engine) as db, db.begin():
                    return store_decoded(db, batch)
            except DatabaseUnavailable as error:
                if self._stopping.is_set():
                    raise
                log.warning("intake: %s; retrying the batch in %.1f s", error, self._retry_s)
                time.sleep(self._retry_s)

    def _write(self, pending: queue.Queue[_Work], done: queue.Queue[list[TopicPartition]]) -> None:
        while (work := pending.get()) is not None:
            batch, offsets = work
            try:
                result = self._store(batch)
            except DatabaseUnavailable:
                return  # stopping while the database is away: the batch is read again
            except BaseException as error:  # noqa: BLE001 - handed to the polling thread, re-raised
                self._failure = error
                return
            self.stored += result.stored
            if result.stored or result.rejected:
                log.info(
                    "intake: stored %d alert(s), %d duplicate(s), %d rejected",
                    result.stored,
                    result.duplicates,
                    result.rejected,
                )
            done.put(offsets)

    @staticmethod
    def _commit(consumer: Consumer, done: queue.Queue[list[TopicPartition]]) -> None:
        while not done.empty():
            offsets = done.get_nowait()
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as error:  # a lost partition: its new owner re-reads them
                log.warning("intake: commit failed (%s); those alerts may be read again", error)

    def run(self) -> None:
        desk = self._settings.desk
        consumer = Consumer(consumer_config(self._settings.kafka, desk.intake_group_id))
        consumer.subscribe([self._settings.topics.alerts])
        log.info(
            "intake: reading %s as group %s", self._settings.topics.alerts, desk.intake_group_id
        )
        pending: queue.Queue[_Work] = queue.Queue(maxsize=1)
        done: queue.Queue[list[TopicPartition]] = queue.Queue()
        writer = threading.Thread(target=self._write, args=(pending, done), name="intake-writer")
        writer.start()
        try:
            while not self._stopping.is_set() and writer.is_alive():
                self._commit(consumer, done)
                messages = []
                for message in consumer.consume(desk.intake_batch_max, timeout=0.5):
                    error = message.error()
                    if error is None:
                        messages.append(message)
                    elif error.code() != KafkaError._PARTITION_EOF:
                        if error.fatal():
                            raise RuntimeError(f"intake consumer failed: {error.str()}")
                        log.warning("intake consumer: %s", error.str())
                if not messages:
                    continue
                work = (
                    decode_batch([Received(m.value(), _source(m)) for m in messages]),
                    _next_offsets(messages),
                )
                while writer.is_alive():  # wait for room, committing what gets stored
                    try:
                        pending.put(work, timeout=0.2)
                        break
                    except queue.Full:
                        self._commit(consumer, done)
        finally:
            while writer.is_alive():
                try:
                    pending.put(None, timeout=0.2)
                    break
                except queue.Full:
                    continue
            writer.join()
            self._commit(consumer, done)
            consumer.close()
        if self._failure is not None:
            raise RuntimeError("the intake's writer failed") from self._failure
