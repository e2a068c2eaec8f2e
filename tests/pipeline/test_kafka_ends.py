"""The driver's Kafka ends on the real broker: a subscribed consumer and a producer, plain and
transactional - outputs delivered, the group's offsets committed after them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import closing

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream.kafka.clients import OutgoingMessage, TrackedProducer, consumer_config, producer_config
from stream.pipeline.driver import BatchDriver, DriverLimits
from stream.pipeline.kafka_ends import KafkaSink, KafkaSource
from stream.pipeline.memory import Outputs, PlainSteps
from stream.pipeline.messages import Incoming
from stream.settings import KafkaSettings

pytestmark = pytest.mark.integration


def produce(kafka: KafkaSettings, topic: str, count: int) -> None:
    producer = Producer(kafka.client_config())
    for n in range(count):
        producer.produce(topic, value=f"v{n}".encode(), key=f"k{n}".encode())
    assert producer.flush(30) == 0


def read_all(kafka: KafkaSettings, topic: str, count: int, timeout_s: float = 30) -> list[bytes]:
    consumer = Consumer(consumer_config(kafka, f"reader-{topic}"))
    with closing(consumer):
        consumer.subscribe([topic])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(values) < count and time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=0.5):
                if message.error() is None and message.value() is not None:
                    values.append(bytes(message.value()))  # type: ignore[arg-type]
        return values


def committed(kafka: KafkaSettings, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer(consumer_config(kafka, group))
    with closing(consumer):
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 30)
        return {tp.partition: tp.offset for tp in found}


def upper(out_topic: str) -> Callable[[list[Incoming]], Outputs]:
    def process(batch: list[Incoming]) -> Outputs:
        return Outputs([OutgoingMessage(out_topic, (m.value or b"").upper()) for m in batch])

    return process


@pytest.mark.parametrize("transactional", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_topic_is_driven_through_to_another_and_its_offsets_committed(
    kafka_settings: KafkaSettings,
    new_topic: Callable[..., str],
    group_id: str,
    transactional: bool,
) -> None:
    source_topic, out_topic = new_topic(partitions=2), new_topic()
    produce(kafka_settings, source_topic, 40)

    consumer = Consumer(consumer_config(kafka_settings, group_id))
    source = KafkaSource(consumer, [source_topic])
    producer = TrackedProducer(
        producer_config(
            kafka_settings, transactional_id=f"{group_id}-tx" if transactional else None
        )
    )
    if transactional:
        producer.raw.init_transactions(30)
    seen = 0
    stop: list[Callable[[], None]] = []  # the driver's, once it exists

    def after(batch: list[Incoming], _: Outputs) -> None:
        nonlocal seen
        seen += len(batch)
        if seen >= 40:
            stop[0]()

    driver: BatchDriver[Incoming, list[Incoming], None, Outputs] = BatchDriver(
        source,
        KafkaSink(producer, transactional=transactional),
        PlainSteps(upper(out_topic), after),
        limits=DriverLimits(max_records=16, wait_s=0.2, shutdown_s=30),
    )
    stop.append(driver.request_stop)
    guard = threading.Timer(60, driver.request_stop)  # a hung test fails instead of hanging
    guard.start()
    try:
        driver.run()  # returns once ``after`` has seen everything
    finally:
        guard.cancel()
        source.close()
        stop.clear()  # ``after`` holds the driver: else the producer outlives the broker
    assert seen == 40

    assert sorted(read_all(kafka_settings, out_topic, 40)) == sorted(
        f"V{n}".encode() for n in range(40)
    )
    offsets = committed(kafka_settings, group_id, source_topic, 2)
    assert sum(offsets.values()) == 40


def test_a_partition_revoked_while_paused_is_read_when_it_comes_back(
    kafka_settings: KafkaSettings, new_topic: Callable[..., str], group_id: str
) -> None:
    # librdkafka keeps a partition's pause through a rebalance: one revoked while its reader
    # waited paused came back paused, and was never read again (found by a broker restart
    # under load, tests/reliability/test_faults.py). The source lets no partition leave paused.
    topic = new_topic(partitions=2)
    produce(kafka_settings, topic, 20)
    source = KafkaSource(Consumer(consumer_config(kafka_settings, group_id)), [topic])
    other = Consumer(consumer_config(kafka_settings, group_id))
    try:
        until(lambda: len(source.assignment()) == 2, source)
        source.pause(list(source.assignment()))  # a wait, as the driver's retries make
        other.subscribe([topic])  # a second member takes one partition...
        until(lambda: len(source.assignment()) == 1, source, other)
        kept = list(source.assignment())
        other.close()  # ...and leaves: the partition comes back
        until(lambda: len(source.assignment()) == 2, source)
        source.resume(kept)  # the wait ends: the driver resumes what it had paused and kept

        read: list[Incoming] = []
        deadline = time.monotonic() + 30
        while len(read) < 20 and time.monotonic() < deadline:
            read.extend(source.read(20, wait_s=0.5))
    finally:
        source.close()
    # both partitions from the start (nothing was committed): the returned one too
    assert sorted((m.value or b"").decode() for m in read) == sorted(f"v{n}" for n in range(20))


def until(condition: Callable[[], bool], source: KafkaSource, *others: Consumer) -> None:
    """Serve the group (rebalance callbacks) until ``condition`` holds."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "the group did not settle within 60 s"
        source.idle(0.1)
        for consumer in others:
            consumer.poll(0.1)
