"""Kafka as the driver's source and sink: a subscribed confluent-kafka ``Consumer`` and a
``TrackedProducer`` (``stream.kafka.clients``), optionally transactional.

The consumer is configured by ``consumer_config`` (manual commits, no auto-stored offsets):
offsets move only when the driver commits a batch that is through. The rebalance callbacks
keep the assignment with a generation per partition, so the driver can tell work read before
a partition left (and perhaps came back) from work read since.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from stream.kafka.clients import OutgoingMessage, TrackedProducer
from stream.kafka.errors import DeliveryFailed
from stream.pipeline.ends import Partition
from stream.pipeline.errors import CommitFailed, OwnershipLost, SinkFailed, SourceFailed
from stream.pipeline.messages import Incoming

log = logging.getLogger(__name__)

# Commit errors after which the partitions belong to someone else: the batch's outputs are
# out, the new owner will reprocess it (harmless) - the commit is not retried.
LOST_OWNERSHIP = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError._ASSIGNMENT_LOST,
    }
)


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def incoming_of(message: Message, received_at: datetime) -> Incoming:
    """A consumed message, detached from the client."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:  # only producer-side messages
        raise SourceFailed("consumed a message without topic/partition/offset")
    ts_type, ts = message.timestamp()
    headers = message.headers() or []
    items = headers.items() if isinstance(headers, dict) else headers
    return Incoming(
        topic=topic,
        partition=partition,
        offset=offset,
        key=_as_bytes(message.key()),
        value=_as_bytes(message.value()),
        headers=tuple((name, _as_bytes(value) or b"") for name, value in items),
        timestamp_ms=ts if ts_type != 0 else None,  # 0: TIMESTAMP_NOT_AVAILABLE
        received_at=received_at,
    )


class KafkaSource:
    """``consumer`` subscribed to ``topics`` as a ``Source[Incoming]`` (never exhausted).

    A read takes what is already fetched; else it waits up to ``wait_s`` for a first message,
    then up to ``fill_s`` more for the batch to fill. ``consume(n, timeout)`` returns only
    once it has ``n`` messages or the timeout ran out, so asking for a whole batch with the
    idle timeout would hold every live batch that long before ``fill_s`` even started. With
    an ``until``, both waits are cut into slices of ``slice_s``, ending when it holds."""

    def __init__(
        self,
        consumer: Consumer,
        topics: Sequence[str],
        *,
        fill_s: float = 0.0,
        slice_s: float = 0.005,
        on_revoked: Callable[[list[Partition]], None] | None = None,
        on_error: Callable[[KafkaError], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``on_revoked``: told of partitions revoked or lost (from the rebalance callback).
        ``on_error``: told of every error the consumer hands out in place of a message,
        before it is judged (fatal: ``SourceFailed``; otherwise logged and skipped); it may
        raise, e.g. on an error no waiting fixes."""
        self._consumer = consumer
        self._fill_s = fill_s
        self._slice_s = slice_s
        self._on_revoked = on_revoked
        self._on_error = on_error
        self._single_topic = len(set(topics)) == 1
        self._now = clock
        self._lock = threading.Lock()
        self._generations: dict[Partition, int] = {}
        self._counter = itertools.count(1)
        consumer.subscribe(
            list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )  # fmt: skip

    def _names(self, partitions: Collection[Partition]) -> list[int] | list[str]:
        """How partitions are logged: by number when one topic is read."""
        if self._single_topic:
            return sorted(p for _, p in partitions)
        return [f"{t}:{p}" for t, p in sorted(partitions)]

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for p in partitions:
                self._generations[(p.topic, p.partition)] = next(self._counter)
            owned = list(self._generations)
        # Cooperative rebalancing hands out increments; log the increment and the result.
        log.info(
            "assigned %s, now reading %s",
            self._names([(p.topic, p.partition) for p in partitions]), self._names(owned),
        )  # fmt: skip

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [(p.topic, p.partition) for p in partitions]
        with self._lock:
            for partition in revoked:
                self._generations.pop(partition, None)
        # librdkafka keeps a partition's pause when it is revoked and hands it back paused
        # when it is assigned again - read by nobody, silently. A partition leaves unpaused.
        try:
            consumer.resume(partitions)
        except KafkaException as exc:  # a rebalance callback must not raise into the poll
            log.warning("could not resume revoked partitions %s: %s", revoked, exc)
        if self._on_revoked is not None:
            self._on_revoked(revoked)
        log.info("revoked %s", self._names(revoked))

    @property
    def exhausted(self) -> bool:
        return False

    def read(
        self, max_records: int, wait_s: float, until: Callable[[], bool] | None = None
    ) -> list[Incoming]:
        consumer = self._consumer
        messages = consumer.consume(max_records, timeout=0)
        if not messages:
            messages = self._first(wait_s, until)
            if not messages:
                return []
        deadline = time.monotonic() + self._fill_s
        while len(messages) < max_records:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (until is not None and until()):
                break
            wait = remaining if until is None else min(remaining, self._slice_s)
            messages.extend(consumer.consume(max_records - len(messages), timeout=wait))
        received_at = self._now()
        return [incoming_of(m, received_at) for m in messages if self._usable(m)]

    def _first(self, wait_s: float, until: Callable[[], bool] | None) -> list[Message]:
        if until is None:
            return self._consumer.consume(1, timeout=wait_s)
        deadline = time.monotonic() + wait_s
        while not until() and time.monotonic() < deadline:
            messages = self._consumer.consume(1, timeout=self._slice_s)
            if messages:
                return messages
        return []

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if self._on_error is not None:
            self._on_error(error)
        if error.fatal():
            raise SourceFailed(f"consumer error: {error.str()}")
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer: %s", error.str())
        return False

    def assignment(self) -> Mapping[Partition, int]:
        with self._lock:
            return dict(self._generations)

    def pause(self, partitions: Collection[Partition]) -> None:
        self._consumer.pause([TopicPartition(t, p) for t, p in partitions])

    def resume(self, partitions: Collection[Partition]) -> None:
        self._consumer.resume([TopicPartition(t, p) for t, p in partitions])

    def idle(self, seconds: float) -> None:
        message = self._consumer.poll(seconds)  # serves rebalance callbacks
        if message is not None and message.error() is None:
            # A partition assigned while the others were paused can deliver: not lost - it
            # was never committed - but rewound, to be read after the wait.
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is not None and partition is not None and offset is not None:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() in LOST_OWNERSHIP:
                raise OwnershipLost(error.str()) from exc
            if error.fatal():
                raise SourceFailed(f"commit failed: {error.str()}") from exc
            raise CommitFailed(error.str()) from exc

    def group(self) -> object:
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        """Leave the group now, so the partitions move without waiting for the session."""
        self._consumer.close()


class KafkaSink:
    """A ``TrackedProducer`` as a sink. Transactional: its ``init_transactions`` is the
    caller's (once, at start-up)."""

    def __init__(self, producer: TrackedProducer, *, transactional: bool = False) -> None:
        self._producer = producer
        self._transactional = transactional
        self._open = False
        """A transaction is open that nothing has committed or aborted yet."""

    @property
    def transactional(self) -> bool:
        return self._transactional

    def produce(self, messages: Sequence[OutgoingMessage]) -> None:
        if not self._transactional:
            self._producer.produce_all(messages)
            return
        try:
            self._producer.produce_all(messages)
        except KafkaException as exc:
            # Judged like a failed commit (aborted if it must be, retried if it can be, fatal
            # otherwise) - and settled here: the driver's ``abort`` then does nothing more.
            self._producer.forget()
            self._open = False
            raise self._failed(exc) from exc

    def flush(self, timeout_s: float) -> None:
        self._producer.flush_or_raise(timeout_s)

    def begin(self) -> None:
        try:
            self._producer.raw.begin_transaction()
        except KafkaException as exc:
            raise self._failed(exc) from exc
        self._open = True

    def commit_transaction(self, offsets: Mapping[Partition, int], group: object) -> None:
        raw = self._producer.raw
        self._open = False
        try:
            raw.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in offsets.items()], group, 30
            )
            raw.commit_transaction(60)
        except KafkaException as exc:
            self._producer.forget()
            raise self._failed(exc) from exc
        self._producer.forget()

    def abort(self) -> None:
        self._producer.forget()
        if self._open:
            self._open = False
            self._producer.raw.abort_transaction(30)

    def _failed(self, exc: KafkaException) -> Exception:
        error: KafkaError = exc.args[0]
        if error.txn_requires_abort():
            self._producer.raw.abort_transaction(30)
            return DeliveryFailed([f"transaction aborted: {error.str()}"])
        if error.retriable():
            return DeliveryFailed([f"transaction failed (retriable): {error.str()}"])
        return SinkFailed(f"transaction failed: {error.str()}")
