"""Subscribe to an alert topic from now, from a time or from the beginning.

Each reader assigns itself every partition and never commits, so any number of readers see
every alert independently, without joining (or disturbing) a consumer group. It reads
committed data only, so alerts of an aborted exactly-once transaction never show.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from schemas import Alert, DecodeError, decode
from stream.kafka.clients import consumer_config
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)

StartAt = str | datetime  # "now", "beginning", or a moment


def start_offsets(consumer: Consumer, topic: str, start: StartAt) -> list[TopicPartition]:
    """Where to start reading every partition of ``topic``: its end, its beginning, or the
    first message written at or after a moment (the broker's timestamps)."""
    metadata = consumer.list_topics(topic, timeout=30)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise LookupError(f"topic {topic!r} does not exist")
    partitions = sorted(metadata.topics[topic].partitions)
    if start == "now":
        return [TopicPartition(topic, p, OFFSET_END) for p in partitions]
    if start == "beginning":
        return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    assert isinstance(start, datetime)
    ms = int(start.timestamp() * 1000)
    wanted = [TopicPartition(topic, p, ms) for p in partitions]
    found = consumer.offsets_for_times(wanted, timeout=30)
    # A partition with nothing that recent answers -1: start at its end.
    return [
        TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
        for tp in found
    ]


def read_alerts(
    kafka: KafkaSettings,
    topic: str,
    start: StartAt,
    *,
    idle_timeout_s: float | None = None,
    on_invalid: Callable[[bytes | None, str], None] | None = None,
) -> Iterator[tuple[bytes, Alert]]:
    """Yield (raw bytes, alert) as they arrive; stop after `idle_timeout_s` without any."""
    consumer = Consumer(
        consumer_config(
            kafka, f"riskstream-tail-{uuid.uuid4().hex[:8]}", auto_offset_reset="latest"
        )
    )
    try:
        consumer.assign(start_offsets(consumer, topic, start))
        last = time.monotonic()
        while idle_timeout_s is None or time.monotonic() - last < idle_timeout_s:
            message = consumer.poll(0.2)
            if message is None:
                continue
            kafka_error = message.error()
            if kafka_error is not None:
                # Partition EOF and transient broker errors: librdkafka recovers by itself;
                # a fatal error would stop every later read, so surface it.
                if kafka_error.fatal():
                    raise RuntimeError(f"alert reader failed: {kafka_error.str()}")
                log.debug("alert reader: %s", kafka_error.str())
                continue
            last = time.monotonic()
            raw = message.value()
            raw_bytes = raw.encode() if isinstance(raw, str) else raw
            try:
                yield raw_bytes or b"", decode(Alert, raw_bytes)
            except DecodeError as error:
                if on_invalid is not None:
                    on_invalid(raw_bytes, error.reason)
    finally:
        consumer.close()
