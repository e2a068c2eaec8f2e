"""The two ends of a batch loop, as the driver (``stream.pipeline.driver``) sees them.

A ``Source`` hands out batches of positioned records and takes back the offsets of the work
that is done; a ``Sink`` takes a batch's outputs and says when the broker has them. Kafka
implements both (``stream.pipeline.kafka_ends``); so does memory (``stream.pipeline.memory``),
which is what lets the driver's pause, retry, rebalance and shutdown paths be unit-tested
without a broker. A worker brings its own where its input or output is neither (a replay's
file, a run directory).

Offsets follow Kafka's convention everywhere: the offset committed for a partition is the
offset of the next record to read, one past the last one processed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from stream.kafka.clients import OutgoingMessage

Partition = tuple[str, int]
"""(topic, partition)."""


class Positioned(Protocol):
    """A record the driver can place: where it came from (``Incoming`` is one)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=Positioned)


def next_offsets(records: Iterable[Positioned]) -> dict[Partition, int]:
    """The offset to commit per partition once ``records`` are done: one past the highest."""
    offsets: dict[Partition, int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets


class Source(Protocol[R]):
    """Where batches come from, and where their offsets go back to."""

    @property
    def exhausted(self) -> bool:
        """Nothing more will ever be read (a bounded input read to its end); a live
        subscription never is."""

    def read(
        self, max_records: int, wait_s: float, until: Callable[[], bool] | None = None
    ) -> list[R]:
        """Up to ``max_records`` records, returning after at most about ``wait_s`` with what
        has arrived (possibly nothing). ``until``: when given, the read also returns as soon
        as it holds, with what it has (a source that never waits may ignore it)."""

    def assignment(self) -> Mapping[Partition, int]:
        """The partitions owned now, each with its generation: a number that changes every
        time the partition is assigned, so work read under an earlier ownership is told
        apart even when the partition has come back since."""

    def pause(self, partitions: Collection[Partition]) -> None:
        """Stop fetching these partitions (what was read stays where it is)."""

    def resume(self, partitions: Collection[Partition]) -> None:
        """Fetch these again; owned or not (a pause may outlive the partition's ownership:
        librdkafka keeps it through a rebalance)."""

    def idle(self, seconds: float) -> None:
        """Let ``seconds`` pass without returning records while staying a member of the
        consumer group (serving its callbacks: heartbeats, rebalances)."""

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit next-offsets. Raises ``OwnershipLost`` when the group has moved the
        partitions on (not to be retried), ``CommitFailed`` when retrying can help."""

    def group(self) -> object:
        """What a transactional sink sends with the offsets (Kafka: the consumer group
        metadata)."""


class Sink(Protocol):
    """Where a batch's outputs go."""

    @property
    def transactional(self) -> bool:
        """Outputs and offsets are committed together (``begin`` ... ``commit_transaction``)
        instead of produced, flushed and then committed through the source."""

    def produce(self, messages: Sequence[OutgoingMessage]) -> None:
        """Hand the messages over; they are not delivered until ``flush`` says so."""

    def flush(self, timeout_s: float) -> None:
        """Wait until everything produced since the last successful flush is acknowledged.
        Raises ``FlushTimeout`` when ``timeout_s`` passed first (nothing is forgotten: call
        again to keep waiting) and ``DeliveryFailed`` when something was refused (everything
        is forgotten: produce the batch again)."""

    def begin(self) -> None:
        """Open a transaction (transactional sinks only)."""

    def commit_transaction(self, offsets: Mapping[Partition, int], group: object) -> None:
        """Commit the transaction's outputs together with ``offsets`` of ``group``. Raises
        ``DeliveryFailed`` when the transaction was aborted and can be tried again."""

    def abort(self) -> None:
        """Abort the open transaction: none of its outputs become visible."""
