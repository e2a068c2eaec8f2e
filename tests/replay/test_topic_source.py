"""TopicSource on the real broker with transactional input, which leaves more in a partition
than data: commit and abort markers, and transactions not decided yet. A range still ends at
the offsets captured when it opened, and the read finishes there. Also the readers built on
it: labels from a topic (replays, reports) and the broker timestamps of a run's alerts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.alert import ALERT_ID_HEADER
from stream.backtest.data import broker_timestamps
from stream.backtest.errors import BacktestError
from stream.replay.errors import LabelSourceError
from stream.replay.labels import read_label_topic
from stream.replay.sources import PartitionRange, TopicSource, to_ms
from stream.settings import KafkaSettings

pytestmark = pytest.mark.integration


def event(n: int) -> bytes:
    return orjson.dumps({"event_time": f"2026-03-01T08:00:{n:02d}.000Z", "n": n})


def produce_plain(kafka: KafkaSettings, topic: str, numbers: range) -> None:
    producer = Producer({**kafka.client_config(), "enable.idempotence": True})
    for n in numbers:
        producer.produce(topic, event(n))
    assert producer.flush(30) == 0


@pytest.fixture
def transactional(kafka_settings: KafkaSettings) -> Iterator[Producer]:
    producer = Producer(
        {**kafka_settings.client_config(), "transactional.id": f"txn-{uuid.uuid4().hex[:10]}"}
    )
    producer.init_transactions(30)
    yield producer
    producer.flush(30)


def wait_for_high_watermark(kafka: KafkaSettings, topic: str, high: int) -> None:
    """Transaction markers are written after commit_transaction() returns."""
    consumer = Consumer({**kafka.client_config(), "group.id": "watermarks"})
    try:
        deadline = time.monotonic() + 30
        while consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1] < high:
            assert time.monotonic() < deadline, f"{topic} never reached offset {high}"
            time.sleep(0.1)
    finally:
        consumer.close()


def source(kafka: KafkaSettings, topic: str) -> TopicSource:
    return TopicSource(kafka, topic, group_id=f"g-{uuid.uuid4().hex[:10]}", stall_timeout_s=3)


def numbers_read(kafka: KafkaSettings, topic: str) -> list[int]:
    opened = source(kafka, topic)
    try:
        return [orjson.loads(r.value or b"")["n"] for r in opened.records()]
    finally:
        opened.close()


def test_a_commit_marker_at_the_end_of_a_range_does_not_hold_it_open(
    kafka_settings: KafkaSettings, new_topic: Callable[..., str], transactional: Producer
) -> None:
    topic = new_topic(1, "txn")
    transactional.begin_transaction()
    for n in range(3):
        transactional.produce(topic, event(n))
    transactional.commit_transaction(30)
    wait_for_high_watermark(kafka_settings, topic, 4)
    opened = source(kafka_settings, topic)
    try:
        # three events, then the commit marker: the last offset holds no message to read
        assert opened.ranges == [PartitionRange(0, 0, 4)]
        assert [r.offset for r in opened.records()] == [0, 1, 2]
    finally:
        opened.close()


def test_a_transaction_still_open_when_the_range_opens_is_not_part_of_it(
    kafka_settings: KafkaSettings, new_topic: Callable[..., str], transactional: Producer
) -> None:
    # A read_committed consumer's high watermark is the last stable offset: the range ends
    # where the open transaction begins, like an append made after the replay started. The
    # read must finish there rather than wait for the transaction.
    topic = new_topic(1, "txn")
    produce_plain(kafka_settings, topic, range(2))
    transactional.begin_transaction()
    for n in range(2, 4):
        transactional.produce(topic, event(n))
    transactional.flush(30)
    assert numbers_read(kafka_settings, topic) == [0, 1]

    transactional.commit_transaction(30)
    wait_for_high_watermark(kafka_settings, topic, 5)
    assert numbers_read(kafka_settings, topic) == [0, 1, 2, 3]


def test_an_aborted_transaction_is_skipped_to_the_end_of_the_range(
    kafka_settings: KafkaSettings, new_topic: Callable[..., str], transactional: Producer
) -> None:
    topic = new_topic(1, "txn")
    produce_plain(kafka_settings, topic, range(2))
    transactional.begin_transaction()
    transactional.produce(topic, event(2))
    transactional.abort_transaction(30)
    produce_plain(kafka_settings, topic, range(3, 5))
    assert numbers_read(kafka_settings, topic) == [0, 1, 3, 4]


# -- the other whole-topic readers built on TopicSource ----------------------------------------


def label_json(n: int, *, label_hours: int) -> bytes:
    return orjson.dumps(
        {
            "label_id": f"lb-{n}",
            "event_id": f"ev-{n}",
            "customer_id": f"cus-{n}",
            "event_time": "2026-03-01T08:00:00Z",
            "label_time": f"2026-03-01T{8 + label_hours:02d}:00:00Z",
            "source": "chargeback",
            "is_suspicious": True,
            "typology": "stolen_card",
        }
    )


def test_labels_are_read_from_every_partition_of_a_topic_and_bad_ones_skipped(
    kafka_settings: KafkaSettings, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(2, "labels")
    producer = Producer(kafka_settings.client_config())
    for n in range(6):
        producer.produce(topic, label_json(n, label_hours=n), partition=n % 2)
    producer.produce(topic, b'{"label_id": "half a label"}', partition=0)
    assert producer.flush(30) == 0

    labels = read_label_topic(kafka_settings, topic, timeout_s=10)
    assert sorted(lb.label_id for lb in labels) == [f"lb-{n}" for n in range(6)]
    with pytest.raises(LabelSourceError, match="does not exist"):
        read_label_topic(kafka_settings, f"{topic}-missing")


def test_broker_timestamps_of_alerts_keep_each_alert_ids_first_copy(
    kafka_settings: KafkaSettings, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(2, "alerts")
    producer = Producer(kafka_settings.client_config())
    copies = [("a1", 0, 1_000), ("a2", 1, 2_000), ("a1", 0, 3_000)]  # a1 redelivered later
    for alert_id, partition, ms in copies:
        producer.produce(
            topic,
            b"{}",
            partition=partition,
            timestamp=1_772_000_000_000 + ms,
            headers=[(ALERT_ID_HEADER, alert_id.encode())],
        )
    producer.produce(topic, b"{}", partition=1)  # no alert id: not an alert
    assert producer.flush(30) == 0

    landed = broker_timestamps(kafka_settings, topic, timeout_s=10)
    assert landed == {"a1": 1_772_000_001_000, "a2": 1_772_000_002_000}
    with pytest.raises(BacktestError, match="does not exist"):
        broker_timestamps(kafka_settings, f"{topic}-missing")


def test_a_partition_with_nothing_since_the_start_time_contributes_nothing(
    kafka_settings: KafkaSettings, new_topic: Callable[..., str]
) -> None:
    # Regression: the broker answers -1 when a partition holds nothing at or after a time.
    # For the start of a range that was read as "no start given", so such a partition was
    # replayed from its beginning: old events the range was chosen to leave out.
    topic = new_topic(2, "times")
    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    producer = Producer(kafka_settings.client_config())
    for hours in range(4):  # partition 0: 08:00 to 11:00
        producer.produce(topic, event(hours), partition=0, timestamp=to_ms(t0) + hours * 3600_000)
    for n in range(3):  # partition 1: two days earlier only
        producer.produce(topic, event(n), partition=1, timestamp=to_ms(t0 - timedelta(days=2)))
    assert producer.flush(30) == 0

    opened = TopicSource(
        kafka_settings,
        topic,
        group_id=f"g-{uuid.uuid4().hex[:10]}",
        start=t0 + timedelta(minutes=90),
        stall_timeout_s=3,
    )
    try:
        assert [(r.partition, r.start, r.end) for r in opened.ranges] == [(0, 2, 4), (1, 3, 3)]
        assert [(r.partition, r.offset) for r in opened.records()] == [(0, 2), (0, 3)]
    finally:
        opened.close()
