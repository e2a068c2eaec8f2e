"""The Kafka ends over stand-in clients - no broker (the real one: test_kafka_ends.py):
``KafkaSource``, how a read fills a batch and when it closes early, what it is told of errors
and rebalances; ``KafkaSink``, how a transaction that fails while producing is settled."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream.kafka.clients import OutgoingMessage, TrackedProducer
from stream.kafka.errors import DeliveryFailed
from stream.pipeline.errors import SinkFailed, SourceFailed
from stream.pipeline.kafka_ends import KafkaSink, KafkaSource

Callback = Callable[[Any, list[TopicPartition]], None]


@dataclass
class Msg:
    """What ``KafkaSource`` reads of a ``confluent_kafka.Message``."""

    offset_: int
    error_: KafkaError | None = None
    topic_: str = "tx"
    partition_: int = 0

    def error(self) -> KafkaError | None:
        return self.error_

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000


class FakeConsumer:
    """Hands out what is ``arriving``: each entry (seconds from the first consume, message)
    becomes readable at its time; ``consume`` waits like the real one, until it has ``n``
    messages or the timeout ran out."""

    def __init__(self, arriving: list[tuple[float, Msg]] | None = None) -> None:
        self.arriving = deque(arriving or [])
        self.calls: list[tuple[int, float]] = []
        self.started: float | None = None
        self.callbacks: dict[str, Callback] = {}

    def subscribe(self, topics: list[str], **callbacks: Callback) -> None:
        self.callbacks = callbacks

    def resume(self, partitions: list[TopicPartition]) -> None:
        """A revoked partition is resumed; what that does is the real broker's test's."""

    def _due(self, n: int) -> list[Msg]:
        assert self.started is not None
        now = time.monotonic() - self.started
        out: list[Msg] = []
        while self.arriving and len(out) < n and self.arriving[0][0] <= now:
            out.append(self.arriving.popleft()[1])
        return out

    def consume(self, n: int, timeout: float) -> list[Msg]:
        if self.started is None:
            self.started = time.monotonic()
        self.calls.append((n, timeout))
        deadline = time.monotonic() + timeout
        out = self._due(n)
        while len(out) < n and time.monotonic() < deadline:
            time.sleep(0.001)
            out.extend(self._due(n - len(out)))
        return out


def source_over(consumer: FakeConsumer, **kwargs: Any) -> KafkaSource:
    return KafkaSource(cast(Consumer, consumer), ["tx"], **kwargs)


def test_a_read_takes_what_is_fetched_then_fills_for_fill_s() -> None:
    consumer = FakeConsumer([(0.0, Msg(0)), (0.0, Msg(1)), (0.02, Msg(2)), (5.0, Msg(3))])
    source = source_over(consumer, fill_s=0.1)
    started = time.monotonic()
    batch = source.read(10, wait_s=1.0)
    took = time.monotonic() - started
    assert [m.offset for m in batch] == [0, 1, 2]
    assert 0.1 <= took < 0.5
    assert consumer.calls[0] == (10, 0), "what is already fetched is taken without a wait"


def test_with_nothing_fetched_a_read_waits_for_one_message_then_fills() -> None:
    consumer = FakeConsumer([(0.05, Msg(0)), (0.06, Msg(1))])
    source = source_over(consumer, fill_s=0.05)
    batch = source.read(10, wait_s=1.0)
    assert [m.offset for m in batch] == [0, 1]
    assert consumer.calls[1] == (1, 1.0), "the first wait asks for one message only"


def test_a_read_with_nothing_arriving_returns_empty_after_wait_s() -> None:
    source = source_over(FakeConsumer(), fill_s=1.0)
    started = time.monotonic()
    assert source.read(10, wait_s=0.05) == []
    assert time.monotonic() - started < 0.5


def test_until_ends_the_wait_for_a_first_message() -> None:
    consumer = FakeConsumer([(5.0, Msg(0))])
    source = source_over(consumer, fill_s=1.0, slice_s=0.005)
    free_at = time.monotonic() + 0.05
    started = time.monotonic()
    assert source.read(10, wait_s=2.0, until=lambda: time.monotonic() >= free_at) == []
    assert time.monotonic() - started < 0.5


def test_until_ends_the_fill_with_what_has_arrived() -> None:
    consumer = FakeConsumer([(0.0, Msg(0)), (0.01, Msg(1)), (5.0, Msg(2))])
    source = source_over(consumer, fill_s=2.0, slice_s=0.005)
    free_at = time.monotonic() + 0.05
    started = time.monotonic()
    batch = source.read(10, wait_s=1.0, until=lambda: time.monotonic() >= free_at)
    assert [m.offset for m in batch] == [0, 1]
    assert time.monotonic() - started < 0.5
    assert all(timeout <= 0.005 for _, timeout in consumer.calls[1:]), "waits in slices"


def test_errors_in_place_of_messages_are_told_skipped_or_fatal() -> None:
    told: list[int] = []
    transport = KafkaError(KafkaError._TRANSPORT)
    consumer = FakeConsumer([(0.0, Msg(0)), (0.0, Msg(1, transport)), (0.0, Msg(2))])
    source = source_over(consumer, on_error=lambda e: told.append(e.code()))
    assert [m.offset for m in source.read(10, wait_s=0.1)] == [0, 2]
    assert told == [KafkaError._TRANSPORT]

    fatal = KafkaError(KafkaError._FATAL, fatal=True)
    source = source_over(FakeConsumer([(0.0, Msg(0, fatal))]))
    with pytest.raises(SourceFailed):
        source.read(10, wait_s=0.1)


def test_an_error_hook_may_end_the_read() -> None:
    class Refused(Exception):
        pass

    def refuse(error: KafkaError) -> None:
        raise Refused(error.str())

    auth = KafkaError(KafkaError._AUTHENTICATION)
    source = source_over(FakeConsumer([(0.0, Msg(0, auth))]), on_error=refuse)
    with pytest.raises(Refused):
        source.read(10, wait_s=0.1)


def test_rebalances_move_generations_tell_revocations_and_log_partition_numbers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    revoked: list[list[tuple[str, int]]] = []
    consumer = FakeConsumer()
    source = source_over(consumer, on_revoked=revoked.append)
    assign, revoke = consumer.callbacks["on_assign"], consumer.callbacks["on_revoke"]
    with caplog.at_level(logging.INFO, logger="stream.pipeline.kafka_ends"):
        assign(consumer, [TopicPartition("tx", 0), TopicPartition("tx", 1)])
        first = source.assignment()[("tx", 1)]
        revoke(consumer, [TopicPartition("tx", 1)])
        assign(consumer, [TopicPartition("tx", 1)])
    assert set(source.assignment()) == {("tx", 0), ("tx", 1)}
    assert source.assignment()[("tx", 1)] != first, "a partition back is a new generation"
    assert revoked == [[("tx", 1)]]
    assert "assigned [0, 1], now reading [0, 1]" in caplog.messages
    assert "revoked [1]" in caplog.messages
    assert "assigned [1], now reading [0, 1]" in caplog.messages


# -- KafkaSink ----------------------------------------------------------------------------------


class FakeProducer:
    """What ``KafkaSink`` drives of a ``TrackedProducer`` in a transaction."""

    def __init__(self, produce_error: KafkaError | None = None) -> None:
        self.produce_error = produce_error
        self.calls: list[str] = []

    @property
    def raw(self) -> FakeProducer:
        return self

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce_all(self, messages: list[OutgoingMessage]) -> None:
        self.calls.append("produce")
        if self.produce_error is not None:
            raise KafkaException(self.produce_error)

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")

    def forget(self) -> None:
        self.calls.append("forget")


def failing_transaction(error: KafkaError) -> tuple[FakeProducer, Exception]:
    """The driver's part: begin, produce, and abort when producing raised."""
    producer = FakeProducer(error)
    sink = KafkaSink(cast(TrackedProducer, producer), transactional=True)
    sink.begin()
    try:
        sink.produce([OutgoingMessage("out", b"v")])
    except Exception as exc:  # noqa: BLE001 - returned for the test to judge
        sink.abort()
        return producer, exc
    raise AssertionError("produce did not fail")


def test_a_produce_that_needs_an_abort_is_aborted_once_and_retried() -> None:
    producer, raised = failing_transaction(
        KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True)
    )
    assert isinstance(raised, DeliveryFailed)
    assert producer.calls.count("abort") == 1


def test_a_produce_that_no_retry_helps_fails_the_sink_without_an_abort() -> None:
    producer, raised = failing_transaction(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    assert isinstance(raised, SinkFailed)
    assert "abort" not in producer.calls
