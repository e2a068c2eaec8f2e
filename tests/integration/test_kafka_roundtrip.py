"""Round trip through the real broker: produce with confluent-kafka, consume in a group,
decode and validate every message, commit, and check a restarted consumer resumes after the
committed offsets."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer

from schemas import DecodeError, TransactionEvent, decode
from stream.settings import KafkaSettings

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 1, tzinfo=UTC)


def event_bytes(i: int) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_id": f"evt-{i:06d}",
            "event_time": (START + timedelta(seconds=i)).isoformat(),
            "customer_id": f"cust-{i % 97}",
            "account_id": f"acct-{i % 97}",
            "channel": "card",
            "direction": "outbound",
            "amount_minor": 100 + i,
            "currency": "USD",
            "counterparty_id": f"merchant-{i % 13}",
            "counterparty_type": "merchant",
            "terminal_id": f"term-{i % 29}",
            "mcc": "5411",
            "country": "US",
        }
    )


def produce(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**kafka.client_config(), "enable.idempotence": True, "linger.ms": 5})
    failures: list[str] = []

    def on_delivery(error: object, _message: Message) -> None:
        if error is not None:
            failures.append(str(error))

    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:  # queue full: serve delivery reports, then retry (no drop)
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failures == []


def consumer(kafka: KafkaSettings, group: str) -> Consumer:
    return Consumer(
        {
            **kafka.client_config(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )


def consume(c: Consumer, expected: int, idle_s: float) -> list[Message]:
    """Consume until `expected` messages arrived, or nothing arrives for `idle_s`."""
    received: list[Message] = []
    last = time.monotonic()
    while len(received) < expected and time.monotonic() - last < idle_s:
        batch = c.consume(num_messages=1000, timeout=0.5)
        for message in batch:
            assert message.error() is None, message.error()
            received.append(message)
            last = time.monotonic()
    return received


def test_ten_thousand_events_round_trip_and_committed_offsets_are_not_redelivered(
    kafka_settings: KafkaSettings, new_topic: Callable[..., str], group_id: str
) -> None:
    topic = new_topic(partitions=3)
    total = 10_000
    keyed = [(f"cust-{i % 97}".encode(), event_bytes(i)) for i in range(total)]
    produce(kafka_settings, topic, keyed)

    first = consumer(kafka_settings, group_id)
    first.subscribe([topic])
    messages = consume(first, total, idle_s=20)
    events = [decode(TransactionEvent, m.value()) for m in messages]
    assert len(events) == total
    assert {e.event_id for e in events} == {f"evt-{i:06d}" for i in range(total)}
    # Per key (customer), order is preserved: event ids ascend within a customer.
    by_customer: dict[str, list[str]] = {}
    for e in events:
        by_customer.setdefault(e.customer_id, []).append(e.event_id)
    assert all(ids == sorted(ids) for ids in by_customer.values())
    first.commit(asynchronous=False)
    first.close()

    produce(kafka_settings, topic, [(b"cust-late", event_bytes(total))])
    second = consumer(kafka_settings, group_id)
    second.subscribe([topic])
    after_restart = consume(second, 2, idle_s=8)
    second.close()
    assert [decode(TransactionEvent, m.value()).event_id for m in after_restart] == [
        f"evt-{total:06d}"
    ]


def test_invalid_events_are_rejected_by_name_and_the_consumer_keeps_going(
    kafka_settings: KafkaSettings, new_topic: Callable[..., str], group_id: str
) -> None:
    topic = new_topic()
    good = orjson.loads(event_bytes(1))
    bad: dict[str, bytes] = {
        "missing field": orjson.dumps({k: v for k, v in good.items() if k != "currency"}),
        "wrong type": orjson.dumps({**good, "amount_minor": "lots"}),
        "negative amount": orjson.dumps({**good, "amount_minor": -100}),
        "NaN amount": event_bytes(1).replace(b'"amount_minor":101', b'"amount_minor":NaN'),
        "unknown currency": orjson.dumps({**good, "currency": "QQQ"}),
        "1 MB memo": orjson.dumps({**good, "memo": "x" * (1 << 20)}),
        "non-UTF-8": b'{"event_id": "\xff\xfe"}',
        "not JSON": b"<xml>definitely not json</xml>",
        "empty": b"",
    }
    expected_reasons = {
        "missing field": "field 'currency': Field required",
        "wrong type": "field 'amount_minor': Input should be a valid integer",
        "negative amount": "field 'amount_minor': Input should be greater than 0",
        "NaN amount": "not valid JSON",
        "unknown currency": "unknown ISO 4217 currency code",
        "1 MB memo": "byte limit",
        "non-UTF-8": "not valid JSON",
        "not JSON": "not valid JSON",
        "empty": "empty message",
    }
    messages = [(name.encode(), value) for name, value in bad.items()]
    messages.append((b"good", event_bytes(2)))
    # A 1 MB message needs a producer allowed to send it; the broker default (1 MB) is enough
    # for the value but not with overhead, so raise the client limit only.
    producer = Producer({**kafka_settings.client_config(), "message.max.bytes": 2_000_000})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    c = consumer(kafka_settings, group_id)
    c.subscribe([topic])
    received = consume(c, len(messages), idle_s=10)
    c.close()
    outcomes: dict[str, str] = {}
    raw_kept: dict[str, bool] = {}
    for message in received:
        name = message.key().decode()
        try:
            decode(TransactionEvent, message.value())
            outcomes[name] = "ok"
        except DecodeError as error:
            outcomes[name] = error.reason
            raw_kept[name] = error.raw in (message.value() or None, message.value())
    assert all(raw_kept.values()), raw_kept
    assert outcomes.pop("good") == "ok"
    # The 1 MB message is rejected by the broker (message.max.bytes) or by our size limit;
    # either way it never becomes an event.
    if "1 MB memo" not in outcomes:
        expected_reasons.pop("1 MB memo")
    assert set(outcomes) == set(expected_reasons)
    for name, reason in expected_reasons.items():
        assert reason in outcomes[name], (name, outcomes[name])
