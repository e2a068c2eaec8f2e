"""Producer and consumer construction shared by every riskstream worker.

The producer wrapper exists for one reason: a message handed to librdkafka is not yet
delivered. `TrackedProducer` counts every produce against its delivery report, treats a full
local queue as backpressure (serve callbacks, retry; never drop), and `flush_or_raise` turns
any failed delivery into an exception, so a caller commits input offsets only after every
output of the batch is acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from stream.kafka.errors import DeliveryFailed, FlushTimeout
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)


def producer_config(
    kafka: KafkaSettings,
    *,
    transactional_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Idempotent, fully acknowledged, lightly batched producer settings."""
    config: dict[str, Any] = {
        **kafka.client_config(),
        "enable.idempotence": True,  # retries never duplicate or reorder within a partition
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # Bounded memory: when this fills, produce() raises BufferError and we back off.
        "queue.buffering.max.messages": 100_000,
        "queue.buffering.max.kbytes": 64 * 1024,
        # A delivery that cannot succeed within this fails instead of waiting forever, so a
        # batch surfaces as retriable rather than hanging the worker.
        "delivery.timeout.ms": 120_000,
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        # librdkafka requires delivery.timeout.ms <= transaction.timeout.ms; the broker caps the
        # latter at transaction.max.timeout.ms (15 minutes by default).
        config["transaction.timeout.ms"] = config["delivery.timeout.ms"]
    config.update(overrides or {})
    return config


def consumer_config(
    kafka: KafkaSettings,
    group_id: str,
    *,
    read_committed: bool = True,
    auto_offset_reset: str = "earliest",
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Manual-commit consumer settings: offsets move only when the caller says the work is done."""
    config: dict[str, Any] = {
        **kafka.client_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": auto_offset_reset,
        # Only see outputs of committed transactions (matters when reading our own topics).
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "partition.assignment.strategy": "cooperative-sticky",
        # Leave the group quickly when a worker dies, so its partitions move on.
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "max.poll.interval.ms": 300_000,
    }
    config.update(overrides or {})
    return config


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class _Ledger:
    """Delivery reports of the messages produced since the last `reset`."""

    pending: int = 0
    delivered: int = 0
    failures: list[str] = field(default_factory=list)


class TrackedProducer:
    """A confluent-kafka Producer whose deliveries are accounted for, batch by batch."""

    def __init__(
        self, config: dict[str, Any], *, on_queue_full: Callable[[], None] | None = None
    ) -> None:
        """``on_queue_full`` is called each time a produce waits for room in the local queue
        (a metric hook: backpressure should be visible, not only survived)."""
        self._producer = Producer(config)
        self._ledger = _Ledger()
        self._on_queue_full = on_queue_full

    @property
    def raw(self) -> Producer:
        """The underlying producer (transactions are driven on it directly)."""
        return self._producer

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        self._ledger.pending -= 1
        if error is None:
            self._ledger.delivered += 1
        else:
            self._ledger.failures.append(f"{message.topic()}: {error.str()}")

    def produce(self, message: OutgoingMessage, *, backoff_s: float = 0.05) -> None:
        """Hand one message to librdkafka; a full queue blocks (serving callbacks), never drops."""
        while True:
            try:
                self._producer.produce(
                    message.topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers) or None,
                    on_delivery=self._on_delivery,
                )
            except BufferError:
                # Backpressure: the local queue is full because the broker is slow or away.
                # Serving delivery reports frees room; the loop retries the same message.
                if self._on_queue_full is not None:
                    self._on_queue_full()
                self._producer.poll(backoff_s)
                continue
            self._ledger.pending += 1
            return

    def produce_all(self, messages: Sequence[OutgoingMessage]) -> None:
        for message in messages:
            self.produce(message)
        self._producer.poll(0)

    def flush_or_raise(self, timeout_s: float) -> int:
        """Wait for every message produced since the last successful call; raise if any failed.

        Returns the number delivered. On FlushTimeout (broker away) nothing is forgotten: call
        again to keep waiting, since librdkafka keeps retrying the queued messages. On
        DeliveryFailed (the broker refused, or delivery.timeout.ms passed) the ledger is
        cleared and the caller produces the batch again.
        """
        deadline = time.monotonic() + timeout_s
        while self._ledger.pending > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FlushTimeout(
                    f"{self._ledger.pending} message(s) unacknowledged after {timeout_s:.1f}s"
                )
            self._producer.flush(min(remaining, 1.0))
        ledger, self._ledger = self._ledger, _Ledger()
        if ledger.failures:
            raise DeliveryFailed(ledger.failures)
        return ledger.delivered

    def forget(self) -> None:
        """Drop the ledger (after a transaction committed or aborted: the transaction, not the
        per-message reports, decides what was delivered)."""
        self._ledger = _Ledger()

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)
