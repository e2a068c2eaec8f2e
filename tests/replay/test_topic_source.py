"""TopicSource on the real broker with transactional input, which leaves more in a partition
than data: commit and abort markers, and transactions not decided yet. A range still ends at
the offsets captured when it opened, and the read finishes there."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream.replay.sources import PartitionRange, TopicSource
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
