"""Helpers the integration tests of several areas share: JSONL outputs read back, and input
produced to a topic the way live traffic arrives (keyed by customer, in order)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson
from confluent_kafka import Producer

from stream.settings import KafkaSettings


def read_jsonl(path: Path) -> list[bytes]:
    """The non-blank lines of a JSONL file, as bytes."""
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def event_ids(values: Iterable[bytes]) -> list[str]:
    return [orjson.loads(v)["event_id"] for v in values]


def message_key(value: bytes, key_field: str = "customer_id") -> bytes:
    """The key an input message is produced with: its customer (``key_field``), or
    ``malformed`` when it is no JSON object."""
    try:
        return str(orjson.loads(value).get(key_field, "")).encode()
    except (orjson.JSONDecodeError, AttributeError):
        return b"malformed"


def produce_values(
    kafka: KafkaSettings,
    topic: str,
    values: Sequence[bytes],
    *,
    key_field: str = "customer_id",
    headers: Sequence[tuple[str, bytes]] = (),
    config: dict[str, object] | None = None,
) -> None:
    """Produce in order, keyed by customer (per-customer order is what Kafka preserves)."""
    producer = Producer(
        {**kafka.client_config(), "enable.idempotence": True, "linger.ms": 5, **(config or {})}
    )
    for value in values:
        while True:
            try:
                producer.produce(
                    topic, value=value, key=message_key(value, key_field), headers=list(headers)
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0, "input not acknowledged"
