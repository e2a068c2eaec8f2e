"""Alerts in and labels out, against the real broker and PostgreSQL.

* The intake stores each alert once whatever the delivery: at-least-once duplicates, a
  committed exactly-once transaction, an aborted one (never seen), an unreadable message (kept
  in intake_rejects), and a kill -9 in the middle of a stream.
* The relay publishes each disposition's label once, also when it restarts after a crash that
  fell between the broker's acknowledgement and the database's "sent" mark.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from schemas import LabelEvent, decode, encode
from stream.desk.auth import add_user
from stream.desk.database import utcnow
from stream.desk.intake import IntakeWorker
from stream.desk.outbox import LABEL_ID_HEADER, OutboxRelay, record_disposition
from stream.desk.tables import AlertRow, Case, IntakeReject, OutboxRow, User
from stream.settings import Settings

from .conftest import DeskProcess, make_alert, produce, read_topic, store, wait_for

pytestmark = pytest.mark.integration


def count(engine: Engine, table: type[AlertRow] | type[IntakeReject] | type[OutboxRow]) -> int:
    with Session(engine) as db:
        return int(db.scalar(select(func.count()).select_from(table)) or 0)


def case_total(engine: Engine) -> int:
    with Session(engine) as db:
        return int(db.scalar(select(func.sum(Case.alert_count))) or 0)


def test_intake_stores_every_alert_once_in_both_delivery_modes(
    desk_settings: Settings, engine: Engine
) -> None:
    topic = desk_settings.topics.alerts
    at_least_once = [make_alert(i, customer=f"c{i % 5}") for i in range(40)]
    committed = [make_alert(i, customer="c-tx") for i in range(100, 110)]
    aborted = [make_alert(i, customer="c-aborted") for i in range(200, 205)]
    raw = [encode(a) for a in at_least_once]
    produce(desk_settings.kafka, topic, raw + raw[:15])  # a redelivered stretch
    produce(
        desk_settings.kafka,
        topic,
        [encode(a) for a in committed],
        transactional_id=f"tx-{uuid.uuid4().hex[:6]}",
    )
    produce(
        desk_settings.kafka,
        topic,
        [encode(a) for a in aborted],
        transactional_id=f"tx-{uuid.uuid4().hex[:6]}",
        abort=True,
    )
    produce(desk_settings.kafka, topic, [b'{"alert_id": "x", "score": "high"}'])

    worker = IntakeWorker(desk_settings, engine)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(
            lambda: count(engine, IntakeReject) == 1 and count(engine, AlertRow) == 50,
            "50 alerts and 1 reject",
        )
        produce(desk_settings.kafka, topic, raw[:10])  # and a late duplicate
        wait_for(lambda: worker.stored == 50, "the intake")
    finally:
        worker.stop()
        thread.join(30)
    with Session(engine) as db:
        stored = set(db.scalars(select(AlertRow.alert_id)))
        assert stored == {a.alert_id for a in at_least_once + committed}
        assert not any(a.alert_id in stored for a in aborted)
        cases = db.execute(select(Case.customer_id, Case.alert_count, Case.open_alerts)).all()
        assert sorted(cases) == sorted([(f"c{i}", 8, 8) for i in range(5)] + [("c-tx", 10, 10)])
        reject = db.scalars(select(IntakeReject)).one()
        assert "score" in reject.reason
        assert reject.raw == b'{"alert_id": "x", "score": "high"}'


def test_intake_killed_with_sigkill_and_restarted_stores_every_alert_once(
    desk_settings: Settings, engine: Engine, start_desk: Callable[..., DeskProcess]
) -> None:
    alerts = [make_alert(i, customer=f"c{i % 50}") for i in range(3000)]
    settings = desk_settings.model_copy(
        update={"desk": desk_settings.desk.model_copy(update={"intake_batch_max": 100})}
    )
    topic = settings.topics.alerts
    produce(settings.kafka, topic, [encode(a) for a in alerts[:1500]])
    desk = start_desk(settings, "--no-web", "--no-relay")
    wait_for(lambda: count(engine, AlertRow) >= 300, "the intake to store some", 120, desk.log)
    desk.kill()  # mid-stream: a batch may be stored but its offsets not committed
    stored_at_kill = count(engine, AlertRow)
    assert stored_at_kill < 3000
    produce(settings.kafka, topic, [encode(a) for a in alerts[1500:]])
    restarted = start_desk(settings, "--no-web", "--no-relay")
    wait_for(lambda: count(engine, AlertRow) == 3000, "every alert", 120, restarted.log)
    assert restarted.terminate() == 0, restarted.log()
    assert count(engine, AlertRow) == 3000
    assert case_total(engine) == 3000  # no case counted a re-read alert twice
    with Session(engine) as db:
        assert db.scalar(select(func.count(Case.id))) == 50


def _disposition_all(engine: Engine, alerts: list[str]) -> None:
    with Session(engine) as db, db.begin():
        user_id = add_user(db, "analyst", "correct horse battery", "analyst").id
    for n, alert_id in enumerate(alerts):
        with Session(engine) as db, db.begin():
            analyst = db.get(User, user_id)
            assert analyst is not None
            verdict = "suspicious" if n % 3 else "legitimate"
            record_disposition(db, analyst, alert_id, verdict, "structuring", None)


def label_ids_on(settings: Settings) -> Counter[str]:
    messages = read_topic(settings.kafka, settings.topics.labels)
    return Counter(decode(LabelEvent, m.value()).label_id for m in messages)


def test_relay_publishes_each_label_once_and_a_restart_after_a_crash_resends_none(
    desk_settings: Settings, engine: Engine
) -> None:
    alerts = [make_alert(i, customer=f"c{i % 4}") for i in range(30)]
    store(engine, alerts)
    _disposition_all(engine, [a.alert_id for a in alerts])

    relay = OutboxRelay(desk_settings, engine)
    while relay.run_once():
        pass
    assert relay.published == 30
    relay.close()  # its process "crashes": the lock goes with its connection

    # A crash between the broker's acknowledgement and the "sent" mark: ten rows were
    # published (they are on the topic) but the database still says attempted, not sent.
    # Five more were attempted but never reached the broker.
    with Session(engine) as db, db.begin():
        ids = list(db.scalars(select(OutboxRow.id).order_by(OutboxRow.id)))
        db.execute(
            update(OutboxRow)
            .where(OutboxRow.id.in_(ids[:15]))
            .values(sent_at=None, attempted_at=utcnow() - timedelta(seconds=30))
        )
        unsent_ids = set(db.scalars(select(OutboxRow.label_id).where(OutboxRow.id.in_(ids[10:15]))))
    on_topic = label_ids_on(desk_settings)
    assert set(on_topic) >= unsent_ids
    # Make the five "never reached the broker": a fresh topic holds only what was published
    # before them, as if their produce had been lost.
    labels_topic = desk_settings.topics.labels
    crashed = desk_settings.model_copy(
        update={"topics": desk_settings.topics.model_copy(update={"labels": labels_topic + "-b"})}
    )
    from stream.devenv import ensure_topics

    ensure_topics(crashed.kafka, {crashed.topics.labels: 1})
    with Session(engine) as db:
        payloads = {r.label_id: r.payload for r in db.scalars(select(OutboxRow))}
    produce_labels(crashed, [payloads[i] for i in sorted(payloads) if i not in unsent_ids])

    restarted = OutboxRelay(crashed, engine)
    while restarted.run_once():
        pass
    assert restarted.reconciled == 10  # found on the topic: marked sent, not published again
    assert restarted.published == 5  # never reached the broker: published now
    counts = label_ids_on(crashed)
    assert len(counts) == 30
    assert max(counts.values()) == 1
    assert count(engine, OutboxRow) == 30
    with Session(engine) as db:
        assert db.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) == 0


def produce_labels(settings: Settings, payloads: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer(settings.kafka.client_config())
    for payload in payloads:
        label = decode(LabelEvent, payload)
        producer.produce(
            settings.topics.labels,
            payload,
            key=label.customer_id.encode(),
            headers=[(LABEL_ID_HEADER, label.label_id.encode())],
        )
    assert producer.flush(30) == 0
