"""A label's offset is committed only after the label was persisted.

The trainer consumes labels while Redis accepts writes, then Redis stops accepting them
(`CLIENT PAUSE ... WRITE`, a real server-side pause): the labels that arrive meanwhile wait
(the Redis client's own short retries, then the trainer's), unacknowledged, and the group's
committed offset stays where it was. When writes
resume, they are persisted and only then committed. Then SIGTERM: a clean exit, and a
restarted trainer reads nothing twice (every label is a duplicate if it did)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from schemas import encode
from stream.devenv import free_ports
from stream.redis_client import connect
from stream.settings import Settings, TrainerSettings
from stream.trainer.store import MAX_UNJOINED, CaseStore
from tests.helpers import produce_values

from .conftest import WorkerProcess, label, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def committed(settings: Settings) -> int:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": settings.trainer.group_id})
    try:
        (position,) = consumer.committed([TopicPartition(settings.topics.labels, 0)], timeout=10)
        return max(position.offset, 0)
    finally:
        consumer.close()


def test_labels_are_committed_only_once_persisted(
    test_settings: Settings,
    redis_client: redis.Redis[bytes],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)
    settings = test_settings.model_copy(
        update={
            "trainer": TrainerSettings(
                group_id=f"trainer-{test_settings.context.namespace}",
                min_labels_per_class=10_000,  # no fine-tune in this test
                check_every_s=1.0,
                metrics_port=port,
            )
        }
    )
    cases = CaseStore(
        connect(settings.redis), settings.context.namespace, max_cases=100, ttl_s=600,
        max_unjoined=MAX_UNJOINED,
    )  # fmt: skip

    def labels(prefix: str, n: int) -> list[bytes]:
        return [encode(label(f"{prefix}{i}", after=timedelta(hours=1))) for i in range(n)]

    produce_values(settings.kafka, settings.topics.labels, labels("a", 20))
    trainer = start_worker(settings, "run", "trainer")
    wait_for(lambda: committed(settings) == 20, "the first labels to be committed", 180)
    assert cases.state().outcomes == {"unknown": 20}  # no scored records: kept to retry

    redis_client.execute_command("CLIENT", "PAUSE", 12_000, "WRITE")
    try:
        produce_values(settings.kafka, settings.topics.labels, labels("b", 10))
        time.sleep(8)  # several commit intervals, while every write waits
        assert committed(settings) == 20
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    wait_for(lambda: committed(settings) == 30, "the paused labels to be committed", 120)
    assert cases.state().outcomes["unknown"] == 30

    assert trainer.terminate() == 0, trainer.log()
    restarted = start_worker(settings, "run", "trainer")
    produce_values(settings.kafka, settings.topics.labels, labels("c", 1))
    wait_for(lambda: committed(settings) == 31, "the restarted trainer", 180)
    assert cases.state().outcomes == {"unknown": 31}  # nothing read twice
    assert restarted.terminate() == 0, restarted.log()
