"""A source and a sink in memory: the driver's pause, retry, rebalance and shutdown paths
unit-tested in milliseconds, without a broker (the integration tests keep the real one).

Both can be told to fail: the sink's flushes pop scripted errors or hang unacknowledged while
``blocked``; the source's commits pop scripted errors, and a test moves partitions with
``revoke`` / ``assign`` as a rebalance would. Both may write to a shared ``journal`` so a test
can check the order of deliveries and commits. ``PlainSteps`` (with ``Outputs``) gives a test
a worker of one function, without a model stage.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stream.kafka.clients import OutgoingMessage
from stream.kafka.errors import DeliveryFailed, FlushTimeout
from stream.pipeline.driver import Finished, Keep
from stream.pipeline.ends import Partition, Positioned
from stream.pipeline.errors import OwnershipLost

R = TypeVar("R", bound=Positioned)
F = TypeVar("F", bound=Finished)
Journal = list[tuple[str, object]]


@dataclass(frozen=True)
class Outputs:
    """A ``Finished`` that is only messages."""

    messages: Sequence[OutgoingMessage] = field(default_factory=tuple)


class PlainSteps(Generic[R, F]):
    """Steps without a model stage: ``process`` gets the owned records and returns what to
    deliver; ``after`` is told when they are through."""

    def __init__(
        self,
        process: Callable[[list[R]], F],
        after: Callable[[list[R], F], None] | None = None,
    ) -> None:
        self._process = process
        self._after = after

    def prepare(self, batch: list[R], meanwhile: Callable[[], None]) -> list[R]:
        return batch

    def score(self, prepared: list[R]) -> None:
        return None

    def finish(self, prepared: list[R], scores: None, keep: Keep) -> F:
        return self._process([r for r in prepared if keep((r.topic, r.partition))])

    def done(self, batch: list[R], prepared: list[R], finished: F) -> None:
        if self._after is not None:
            self._after(batch, finished)


class InMemorySource(Generic[R]):
    """Records by partition, read in the order given. Every partition they name starts
    assigned (generation 1). ``bounded``: exhausted once everything was handed out;
    otherwise it waits for ``append`` like a live topic."""

    def __init__(
        self,
        records: Iterable[R] = (),
        *,
        bounded: bool = True,
        journal: Journal | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._records: list[R] = []
        self._positions: dict[Partition, int] = {}
        self._generations: dict[Partition, int] = {}
        self._counter = itertools.count(1)
        self._bounded = bounded
        self.journal: Journal = journal if journal is not None else []
        self.paused: set[Partition] = set()
        self.committed: dict[Partition, int] = {}
        self.commit_failures: deque[Exception] = deque()
        self.reads = 0
        """Reads that returned records."""
        self.untils: list[Callable[[], bool] | None] = []
        """The ``until`` of every read, in order."""
        self.during_idle: Callable[[], None] | None = None
        """Called on each ``idle``: a test's rebalance while the driver waits."""
        self.append(records)

    def append(self, records: Iterable[R]) -> None:
        with self._lock:
            for record in records:
                self._records.append(record)
                partition = (record.topic, record.partition)
                if partition not in self._generations and partition not in self._positions:
                    self._generations[partition] = next(self._counter)
                    self._positions[partition] = record.offset

    # -- a rebalance, as a test makes it happen ------------------------------------------------

    def revoke(self, partition: Partition) -> None:
        """Moved on. A pause is kept, as librdkafka keeps it: a partition revoked while
        paused comes back paused unless someone resumed it in between."""
        with self._lock:
            self._generations.pop(partition, None)

    def assign(self, partition: Partition) -> None:
        """Assigned again: a new generation, read from the last commit (or the start)."""
        with self._lock:
            self._generations[partition] = next(self._counter)
            first = min(
                (r.offset for r in self._records if (r.topic, r.partition) == partition),
                default=0,
            )
            self._positions[partition] = self.committed.get(partition, first)

    # -- Source ---------------------------------------------------------------------------------

    def _readable(self, record: R) -> bool:
        partition = (record.topic, record.partition)
        return (
            partition in self._generations
            and partition not in self.paused
            and record.offset >= self._positions.get(partition, 0)
        )

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self._bounded and not any(
                (r.topic, r.partition) in self._generations
                and r.offset >= self._positions.get((r.topic, r.partition), 0)
                for r in self._records
            )

    def read(
        self, max_records: int, wait_s: float, until: Callable[[], bool] | None = None
    ) -> list[R]:
        """What is readable now; else, like a consumer with nothing fetched, what arrives
        within ``wait_s`` - returning empty-handed early if ``until`` holds."""
        with self._lock:
            self.untils.append(until)
        deadline = time.monotonic() + wait_s
        while True:
            batch = self._take(max_records)
            if batch:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (until is not None and until()):
                return []
            time.sleep(min(0.001, remaining))

    def _take(self, max_records: int) -> list[R]:
        with self._lock:
            batch: list[R] = []
            for record in self._records:
                if len(batch) >= max_records:
                    break
                if self._readable(record):
                    batch.append(record)
                    self._positions[(record.topic, record.partition)] = record.offset + 1
            if batch:
                self.reads += 1
            return batch

    def assignment(self) -> Mapping[Partition, int]:
        with self._lock:
            return dict(self._generations)

    def pause(self, partitions: Collection[Partition]) -> None:
        with self._lock:
            self.paused.update(partitions)
            self.journal.append(("pause", sorted(partitions)))

    def resume(self, partitions: Collection[Partition]) -> None:
        with self._lock:
            self.paused.difference_update(partitions)
            self.journal.append(("resume", sorted(partitions)))

    def idle(self, seconds: float) -> None:
        if self.during_idle is not None:
            self.during_idle()
        time.sleep(seconds)

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        with self._lock:
            if self.commit_failures:
                raise self.commit_failures.popleft()
            lost = [p for p in offsets if p not in self._generations]
            if lost:
                raise OwnershipLost(f"partitions {lost} are not assigned")
            self.committed.update(offsets)
            self.journal.append(("commit", dict(offsets)))

    def group(self) -> object:
        return self


class InMemorySink:
    """Messages kept in ``delivered`` once a flush (or a transaction) acknowledged them."""

    def __init__(self, *, transactional: bool = False, journal: Journal | None = None) -> None:
        self._transactional = transactional
        self.journal: Journal = journal if journal is not None else []
        self.delivered: list[OutgoingMessage] = []
        self.pending: list[OutgoingMessage] = []
        self.failures: deque[Exception] = deque()
        """Raised one per flush (or transaction commit), before anything is acknowledged."""
        self.blocked = threading.Event()
        """Set: the broker is away - flushes wait out their timeout and acknowledge nothing."""
        self.flushes = 0
        self.in_transaction = False
        self.aborted = 0

    @property
    def transactional(self) -> bool:
        return self._transactional

    def produce(self, messages: Sequence[OutgoingMessage]) -> None:
        self.pending.extend(messages)

    def flush(self, timeout_s: float) -> None:
        self.flushes += 1
        if self.blocked.is_set():
            time.sleep(timeout_s)
            raise FlushTimeout(f"{len(self.pending)} message(s) unacknowledged")
        if self.failures:
            self.pending = []
            raise self.failures.popleft()
        self._acknowledge()

    def _acknowledge(self) -> None:
        self.delivered.extend(self.pending)
        self.journal.append(("delivered", len(self.pending)))
        self.pending = []

    def begin(self) -> None:
        if not self._transactional or self.in_transaction:
            raise RuntimeError("begin outside a transactional sink, or twice")
        self.in_transaction = True

    def commit_transaction(self, offsets: Mapping[Partition, int], group: object) -> None:
        if not self.in_transaction:
            raise RuntimeError("no transaction is open")
        if self.failures:
            error = self.failures.popleft()
            self.abort()
            if isinstance(error, DeliveryFailed):
                raise error
            raise DeliveryFailed([f"transaction aborted: {error}"]) from error
        self.in_transaction = False
        self._acknowledge()
        if isinstance(group, InMemorySource):
            group.committed.update(offsets)
        self.journal.append(("transaction", dict(offsets)))

    def abort(self) -> None:
        self.pending = []
        self.in_transaction = False
        self.aborted += 1
