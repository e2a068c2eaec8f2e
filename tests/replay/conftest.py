"""Helpers for replay tests on the session's real broker and Redis (copied from
tests/scorer/conftest.py where shared: importlib mode keeps test directories apart)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from stream.settings import KafkaSettings, ScorerSettings, Settings
from tests.helpers import read_jsonl


def produce_events(
    kafka: KafkaSettings, topic: str, values: list[bytes], *, timestamps: bool = True
) -> None:
    """Produce in order, keyed by customer; with ``timestamps`` each message carries its event
    time as broker timestamp (CreateTime), as when events are produced when they happen."""
    producer = Producer({**kafka.client_config(), "enable.idempotence": True, "linger.ms": 5})
    for value in values:
        event = orjson.loads(value)
        kwargs = {}
        if timestamps:
            kwargs["timestamp"] = _ms(event["event_time"])
        while True:
            try:
                producer.produce(
                    topic, value=value, key=str(event["customer_id"]).encode(), **kwargs
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0


def _ms(rfc3339: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(rfc3339).timestamp() * 1000)


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 60) -> list[Message]:
    """Every message of ``topic`` up to its current end, partition by partition in order."""
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            for p in partitions
        }
        open_partitions = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in open_partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while open_partitions:
            assert time.monotonic() < deadline, f"timed out reading {topic}"
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    messages.append(message)
                elif message.partition() is not None:
                    open_partitions.discard(message.partition())
        return sorted(messages, key=lambda m: (m.partition(), m.offset()))
    finally:
        consumer.close()


def snapshot_redis(
    client: redis.Redis[bytes], exclude_prefix: str
) -> dict[bytes, tuple[bytes, bool]]:
    """Every key outside ``exclude_prefix``: its serialized value (DUMP) and whether it has a
    TTL - so an EXPIRE or PERSIST on a key shows up too, not only a write."""
    snapshot: dict[bytes, tuple[bytes, bool]] = {}
    prefix = exclude_prefix.encode()
    for key in client.scan_iter(count=1000):
        if key.startswith(prefix):
            continue
        dumped = client.dump(key)
        if dumped is not None:
            snapshot[key] = (dumped, client.pttl(key) >= 0)
    return snapshot


@pytest.fixture
def replay_settings(test_settings: Settings, trained_registry: Path) -> Settings:
    """The test's broker, Redis and topics, the session's trained model, small batches."""
    return test_settings.model_copy(
        update={
            "model": test_settings.model.model_copy(update={"registry_dir": trained_registry}),
            "scorer": ScorerSettings(batch_max_size=64),
        }
    )


@pytest.fixture
def stream_slice(stream_sim: Path) -> Callable[[str, str], list[bytes]]:
    """Events of ``stream_sim`` with ``start <= event_time < end`` (RFC 3339 strings)."""
    values = read_jsonl(stream_sim / "events.jsonl")

    def select(start: str, end: str) -> list[bytes]:
        lo, hi = _ms(start), _ms(end)
        return [v for v in values if lo <= _ms(orjson.loads(v)["event_time"]) < hi]

    return select


@pytest.fixture
def cleanup_namespaces(redis_client: redis.Redis[bytes]) -> Iterator[list[str]]:
    """Namespaces a test expects to be gone; deleted anyway afterwards (kept runs)."""
    namespaces: list[str] = []
    yield namespaces
    for namespace in namespaces:
        keys = list(redis_client.scan_iter(match=f"{namespace}:*", count=1000))
        for start in range(0, len(keys), 500):
            redis_client.delete(*keys[start : start + 500])
