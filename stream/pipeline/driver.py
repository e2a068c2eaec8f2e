"""The batch driver: read a batch, process it, deliver its outputs, commit - one loop for every
worker that has a ``Source`` and a ``Sink`` (``stream.pipeline.ends``).

One batch goes through:

1. read: up to ``max_records``, waiting at most ``wait_s``; records of partitions not owned
   are dropped, and the generation of each owned partition is noted. While a batch is in
   the model lane, the read also ends as soon as the lane comes free (or a stop is asked
   for), so the model does not idle while a batch waits to fill;
2. prepare (``Steps.prepare``, this thread): the work before the model, retried whole. With
   ``prefetch`` (``SplitPrepare``), in two halves a batch apart: batch n+1 is read and begun
   (Redis handed its context) before batch n is completed (narrated), so Redis works on n+1
   while this thread works on n; with a batch begun, a read takes only what is fetched;
3. score (``Steps.score``): the model call - on the model lane (``stream.pipeline.lane``) when
   the driver overlaps, so batch n is scored while batch n+1 is prepared;
4. finish and deliver (``Steps.finish``, then the sink): the outputs of the partitions still
   owned, produced and flushed until the broker acknowledged every one - or produced in one
   transaction with the offsets - retried whole;
5. commit the offsets of the partitions still owned, through the source (its own retries: the
   outputs are out, producing them again would only duplicate them);
6. ``Steps.done``: bookkeeping once the batch is through.

A failure the ``RetryPolicy`` retries pauses the owned partitions and waits out the backoff
while staying in the consumer group (``Source.idle``), then tries the same batch again: it is
never read a second time, and nothing of it is committed before it is through, so a crash at
any point means reprocessing, never loss. Any other failure ends ``run`` uncommitted.

Ownership. A partition the group takes away while its batch is in flight is left to its new
owner, who reads it again from the last commit: from the next step on, the driver builds no
outputs for it and commits nothing of it. Outputs already produced when the partition left
are the only duplicates, and reprocessing makes the same outputs. A partition that comes
back is a new generation: work read under the old one is still dropped.

Hooks. A worker is told - on the driver's thread, through ``Hooks`` - before every read
(swap a model between batches, report liveness), of what every read returned, at every slice
of a wait, and of every commit; and each stage ("read", "produce", "transaction", "commit")
runs inside ``Hooks.stage``, for timing. A hook may raise to end ``run`` (a fatal client
error, say).

Stopping. ``request_stop`` (from a signal handler, another thread) ends the loop after the
batch in hand and the one in the lane are through; if they cannot get through - Redis or
the broker away - ``run`` raises ``ShutdownIncomplete`` once ``shutdown_s`` has passed, with
nothing of them committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from stream.kafka.clients import OutgoingMessage
from stream.kafka.errors import FlushTimeout
from stream.pipeline.ends import Partition, Positioned, Sink, Source, next_offsets
from stream.pipeline.errors import OwnershipLost, ShutdownIncomplete
from stream.pipeline.lane import ModelLane
from stream.pipeline.retry import RetryPolicy

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Positioned)
P = TypeVar("P")
Q = TypeVar("Q")


class Finished(Protocol):
    """What ``Steps.finish`` returns: at least the messages to deliver."""

    @property
    def messages(self) -> Sequence[OutgoingMessage]: ...


F = TypeVar("F", bound=Finished)
Keep = Callable[[Partition], bool]
"""Whether a partition is still owned under the generation its batch was read in."""


class Steps(Protocol[R, P, Q, F]):
    """What a worker does with a batch; the driver does the rest."""

    def prepare(self, batch: list[R], meanwhile: Callable[[], None]) -> P:
        """Everything before the model call, on the driver's thread; retried whole, so it
        must be idempotent. Call ``meanwhile()`` once while waiting on slow I/O (e.g. after
        handing Redis the batch's writes): the driver delivers the batch in the model lane
        then, if the model is done with it."""

    def score(self, prepared: P) -> Q:
        """The model call: no Kafka, no Redis, nothing shared is written."""

    def finish(self, prepared: P, scores: Q, keep: Keep) -> F:
        """The outputs of the records whose partition ``keep`` accepts; may be called again
        for the same batch (after a failure, or when ownership changed while it ran), and
        must then build them afresh."""

    def done(self, batch: list[R], prepared: P, finished: F) -> None:
        """The batch (its owned records) is delivered and committed."""


B = TypeVar("B")
P_co = TypeVar("P_co", covariant=True)


class SplitPrepare(Protocol[R, B, P_co]):
    """``Steps.prepare`` in two halves, for ``BatchDriver(prefetch=...)``: ``begin`` hands
    slow I/O its work and returns at once, ``complete`` waits for it and does the rest.

    Batch n+1 is begun before batch n is completed. The I/O must therefore apply begun
    batches in the order begun and, when batch n fails, must not apply batch n+1 before n's
    retry (the context store refuses it: ``ContextStore.submit_batch``): the driver then
    completes n+1 only to discard it, retries n whole (``Steps.prepare``), and begins n+1
    again."""

    def begin(self, batch: list[R]) -> B: ...

    def complete(self, begun: B) -> P_co: ...


class Hooks(Generic[R]):
    """What a worker is told of around the steps, each a no-op here: a worker overrides what
    it needs. All are called on the driver's thread; any may raise to end ``run``."""

    def before_read(self) -> None:
        """Between batches, before every read: e.g. swap in a new model, report liveness."""

    def after_read(self, records: list[R]) -> None:
        """Every read's records, before those of partitions not owned are dropped."""

    def waiting(self) -> None:
        """Every slice of a wait - a backoff, a wait for acknowledgements - (at most
        ``DriverLimits.idle_slice_s`` apart): e.g. report liveness, check the clients."""

    def stage(self, name: str) -> AbstractContextManager[object]:
        """Around each "read", "produce" (produce and flush), "transaction" and "commit"."""
        return nullcontext()

    def committed(self) -> None:
        """Offsets were committed (through the source, or with a transaction)."""


@dataclass(frozen=True)
class DriverLimits:
    max_records: int = 500
    wait_s: float = 0.2
    """How long a read may wait for records."""
    flush_slice_s: float = 1.0
    """One wait for acknowledgements; between two, the driver serves the group."""
    flush_wait_s: float | None = None
    """Acknowledgements outstanding this long fail the delivery (``FlushTimeout``, retried
    by the policy: produced again); None: wait as long as it takes."""
    idle_slice_s: float = 0.1
    """The longest the driver goes without checking the shutdown bound while it waits."""
    shutdown_s: float = 30.0
    """After ``request_stop``, the longest the driver keeps trying to get a batch through."""


@dataclass(frozen=True)
class _Begun(Generic[R]):
    batch: list[R]
    generations: Mapping[Partition, int]
    begun: object


@dataclass(frozen=True)
class _Held(Generic[R, P]):
    batch: list[R]
    generations: Mapping[Partition, int]
    prepared: P


class _Escalated(Exception):
    """A failure of the lane's batch, completed from inside ``prepare``: it must reach the
    caller as it is, not be taken for a failure of the batch being prepared (whose retry
    would then drop the lane's batch)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _partition(record: Positioned) -> Partition:
    return (record.topic, record.partition)


class BatchDriver(Generic[R, P, Q, F]):
    """Runs ``steps`` over ``source`` into ``sink``; see the module docstring."""

    def __init__(
        self,
        source: Source[R],
        sink: Sink,
        steps: Steps[R, P, Q, F],
        *,
        limits: DriverLimits | None = None,
        policy: RetryPolicy | None = None,
        overlap: bool = False,
        prefetch: SplitPrepare[R, Any, P] | None = None,
        on_retry: Callable[[str, Exception, int], None] | None = None,
        hooks: Hooks[R] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``overlap``: score on the model lane while the next batch is prepared.
        ``prefetch``: ``steps``' prepare in two halves, to begin batch n+1 before completing
        batch n (with ``overlap`` only).
        ``on_retry(stage, error, attempt)``: told of every failure about to be retried
        ("prepare", "deliver", "commit") and of every wait for acknowledgements ("flush")."""
        self._source, self._sink, self._steps = source, sink, steps
        self._hooks: Hooks[R] = hooks if hooks is not None else Hooks()
        self._limits = limits or DriverLimits()
        self._policy = policy or RetryPolicy()
        self._overlap = overlap
        self._prefetch = prefetch if overlap else None
        self._begun: _Begun[R] | None = None
        self._on_retry = on_retry
        self._clock = clock
        self._stop = threading.Event()
        self._stop_at: float | None = None
        self._lane: ModelLane[_Held[R, P], Q] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batches in hand, commit, and return from ``run`` (thread-safe)."""
        if self._stop_at is None:
            self._stop_at = self._clock()
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Until stopped or the source is exhausted. Raises what the policy does not retry,
        and ``ShutdownIncomplete``."""
        if self._overlap:
            self._lane = ModelLane(self._score_held)
        try:
            while not self._stop.is_set() and not self._source.exhausted:
                if self._prefetch is not None:
                    self._prefetch_step(self._prefetch)
                    continue
                batch = self._read()
                self._advance(self._prepare(batch) if batch else None)
            if self._prefetch is not None and self._begun is not None:
                begun, self._begun = self._begun, None
                self._advance(self._complete_begun(self._prefetch, begun, None)[0])
            self._advance(None)  # the batch still in the lane
        finally:
            if self._lane is not None:
                self._lane.close()
                self._lane = None

    # -- the steps ----------------------------------------------------------------------------

    def _read(self, fetched_only: bool = False) -> list[R]:
        hooks = self._hooks
        hooks.before_read()
        in_lane = self._lane.busy if self._lane is not None else None
        # With a batch in the lane, the read closes early once the lane is free: an event
        # then waits for at most one model call it is not part of. With a batch begun, it
        # takes only what is fetched: that batch is not held back waiting for this one.
        until: Callable[[], bool] | None
        if fetched_only:
            until = _always
        elif in_lane is not None:
            until = lambda: in_lane.done() or self._stop.is_set()  # noqa: E731
        else:
            until = None
        wait_s = 0.0 if fetched_only else self._limits.wait_s
        with hooks.stage("read"):
            batch = self._source.read(self._limits.max_records, wait_s, until)
        hooks.after_read(batch)
        return batch

    def _score_held(self, held: _Held[R, P]) -> Q:
        return self._steps.score(held.prepared)

    def _prepare(
        self,
        batch: list[R],
        generations: Mapping[Partition, int] | None = None,
        first_attempt: int = 0,
    ) -> _Held[R, P] | None:
        generations = dict(self._source.assignment()) if generations is None else generations
        attempt = first_attempt
        while True:
            owned = self._owned(batch, generations)
            if not owned:
                if batch:
                    log.info("batch of %d dropped: its partitions moved on", len(batch))
                return None
            try:
                return _Held(owned, generations, self._steps.prepare(owned, self._meanwhile))
            except _Escalated as escalated:
                error = escalated.error
            except Exception as exc:
                attempt += 1
                if not self._will_retry("prepare", exc, attempt, len(owned)):
                    raise
                self._pause_for(self._policy.delay(attempt), len(owned))
                continue
            raise error  # outside the handler: it keeps its own traceback and cause

    def _prefetch_step(self, prefetch: SplitPrepare[R, Any, P]) -> None:
        """Read and begin batch n+1, then complete batch n (begun last time) and advance it."""
        held = self._begun
        batch = self._read(fetched_only=held is not None)
        following = self._begin(prefetch, batch) if batch else None
        if held is None:
            self._begun = following
            if following is None:
                self._advance(None)  # nothing read: deliver what the lane holds
            return
        prepared, self._begun = self._complete_begun(prefetch, held, following)
        self._advance(prepared)

    def _begin(
        self,
        prefetch: SplitPrepare[R, Any, P],
        batch: list[R],
        generations: Mapping[Partition, int] | None = None,
    ) -> _Begun[R] | None:
        """``prefetch.begin`` of the owned records, retried as ``_prepare`` retries."""
        generations = dict(self._source.assignment()) if generations is None else generations
        attempt = 0
        while True:
            owned = self._owned(batch, generations)
            if not owned:
                log.info("batch of %d dropped: its partitions moved on", len(batch))
                return None
            try:
                return _Begun(owned, generations, prefetch.begin(owned))
            except Exception as exc:
                attempt += 1
                if not self._will_retry("prepare", exc, attempt, len(owned)):
                    raise
                self._pause_for(self._policy.delay(attempt), len(owned))

    def _complete_begun(
        self,
        prefetch: SplitPrepare[R, Any, P],
        held: _Begun[R],
        following: _Begun[R] | None,
    ) -> tuple[_Held[R, P] | None, _Begun[R] | None]:
        """``held`` completed, and ``following`` as it must go on. When ``held`` fails, the
        batch begun after it was not applied before it: it is completed only to be discarded
        (its failure expected), ``held`` is retried whole, and ``following`` begun again."""
        try:
            prepared = prefetch.complete(held.begun)
            return _Held(held.batch, held.generations, prepared), following
        except Exception as exc:
            if not self._will_retry("prepare", exc, 1, len(held.batch)):
                raise
        if following is not None:
            try:
                prefetch.complete(following.begun)
            except Exception as exc:  # noqa: BLE001 - expected: it is begun again below
                log.info("batch begun after a failed one discarded: %s", exc)
        self._pause_for(self._policy.delay(1), len(held.batch))
        retried = self._prepare(held.batch, held.generations, first_attempt=1)
        if following is not None:
            following = self._begin(prefetch, following.batch, following.generations)
        return retried, following

    def _meanwhile(self) -> None:
        lane = self._lane
        scored = lane.take_if_done() if lane is not None else None
        if scored is None:
            return
        try:
            self._complete(*scored)
        except Exception as exc:
            raise _Escalated(exc) from exc

    def _advance(self, held: _Held[R, P] | None) -> None:
        if self._lane is not None:
            scored = self._lane.push(held)
            if scored is not None:
                self._complete(*scored)
        elif held is not None:
            self._complete(held, self._steps.score(held.prepared))

    def _complete(self, held: _Held[R, P], scores: Q) -> None:
        """Steps 4-6 of a scored batch."""
        attempt = 0
        while True:
            keep = self._keeper(held.generations)
            owned = [r for r in held.batch if keep(_partition(r))]
            if not owned:
                log.info("batch of %d dropped: its partitions moved on", len(held.batch))
                return
            try:
                finished = self._steps.finish(held.prepared, scores, keep)
                if self._keeper(held.generations) != keep:
                    continue  # a partition left while its outputs were built: build again
                self._deliver(finished.messages, owned, held.generations)
            except Exception as exc:
                attempt += 1
                if not self._will_retry("deliver", exc, attempt, len(owned)):
                    raise
                self._pause_for(self._policy.delay(attempt), len(owned))
                continue
            break
        if not self._sink.transactional:
            self._commit(next_offsets(owned), held.generations, len(owned))
        self._steps.done(owned, held.prepared, finished)

    # -- delivery and commit ------------------------------------------------------------------

    def _deliver(
        self,
        messages: Sequence[OutgoingMessage],
        owned: list[R],
        generations: Mapping[Partition, int],
    ) -> None:
        sink = self._sink
        if sink.transactional:
            with self._hooks.stage("transaction"):
                offsets = self._still_owned(next_offsets(owned), generations)
                sink.begin()
                try:
                    sink.produce(messages)
                except BaseException:
                    sink.abort()
                    raise
                sink.commit_transaction(offsets, self._source.group())
            self._hooks.committed()
            return
        with self._hooks.stage("produce"):
            self._produce_and_flush(messages, len(owned))

    def _produce_and_flush(self, messages: Sequence[OutgoingMessage], size: int) -> None:
        sink = self._sink
        sink.produce(messages)
        started = self._clock()
        waits = 0
        while True:
            try:
                sink.flush(self._limits.flush_slice_s)
                return
            except FlushTimeout as exc:
                # Unacknowledged, not refused: the client keeps retrying the messages, so
                # they are waited for (in the group) rather than produced a second time.
                wait_s = self._limits.flush_wait_s
                if wait_s is not None and self._clock() - started >= wait_s:
                    raise
                waits += 1
                if self._on_retry is not None:
                    self._on_retry("flush", exc, waits)
                self._pause_for(self._limits.idle_slice_s, size)

    def _commit(
        self, offsets: dict[Partition, int], generations: Mapping[Partition, int], size: int
    ) -> None:
        with self._hooks.stage("commit"):
            self._commit_until_done(offsets, generations, size)

    def _commit_until_done(
        self, offsets: dict[Partition, int], generations: Mapping[Partition, int], size: int
    ) -> None:
        attempt = 0
        while True:
            owned = self._still_owned(offsets, generations)
            if not owned:
                log.info("commit skipped: %d partition(s) moved on", len(offsets))
                return
            try:
                self._source.commit(owned)
            except OwnershipLost as exc:
                log.info("commit skipped, partitions moved on: %s", exc)
                return
            except Exception as exc:
                attempt += 1
                if not self._will_retry("commit", exc, attempt, size):
                    raise
                self._pause_for(self._policy.delay(attempt), size)
                continue
            self._hooks.committed()
            return

    # -- ownership ----------------------------------------------------------------------------

    def _keeper(self, generations: Mapping[Partition, int]) -> Keep:
        """The partitions of ``generations`` still owned in the same generation, now."""
        current = self._source.assignment()
        kept = frozenset(p for p, g in generations.items() if current.get(p) == g)
        return _Kept(kept)

    def _owned(self, batch: list[R], generations: Mapping[Partition, int]) -> list[R]:
        keep = self._keeper(generations)
        return [r for r in batch if keep(_partition(r))]

    def _still_owned(
        self, offsets: Mapping[Partition, int], generations: Mapping[Partition, int]
    ) -> dict[Partition, int]:
        keep = self._keeper(generations)
        return {p: o for p, o in offsets.items() if keep(p)}

    # -- waiting ------------------------------------------------------------------------------

    def _will_retry(self, stage: str, error: Exception, attempt: int, size: int) -> bool:
        policy = self._policy
        if not policy.retries(error) or policy.gives_up_after(attempt):
            return False
        if self._on_retry is not None:
            self._on_retry(stage, error, attempt)
        log.warning(
            "%s of a batch of %d failed (attempt %d: %s: %s), retrying in %.1fs",
            stage, size, attempt, type(error).__name__, error, policy.delay(attempt),
        )  # fmt: skip
        return True

    def _pause_for(self, seconds: float, size: int) -> None:
        """Wait without reading - the owned partitions paused, the group served - checking
        the shutdown bound as it goes."""
        source = self._source
        paused = list(source.assignment())
        if paused:
            source.pause(paused)
        try:
            deadline = self._clock() + seconds
            while True:
                self._check_shutdown_bound(size)
                self._hooks.waiting()
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return
                source.idle(min(remaining, self._limits.idle_slice_s))
        finally:
            # What was paused and what is owned now (the group may have moved): librdkafka
            # keeps a partition's pause through a rebalance, so one revoked during the wait
            # and assigned back after it would otherwise never be read again.
            resumed = set(paused) | set(source.assignment())
            if resumed:
                source.resume(resumed)

    def _check_shutdown_bound(self, size: int) -> None:
        if self._stop_at is None:
            return
        bound = self._limits.shutdown_s
        if self._clock() - self._stop_at > bound:
            raise ShutdownIncomplete(
                f"shutdown bound of {bound:.1f}s reached with a batch of {size} unfinished; it "
                "was not committed and will be reprocessed"
            )


def _always() -> bool:
    return True


@dataclass(frozen=True)
class _Kept:
    """A ``Keep`` that compares equal when it keeps the same partitions."""

    partitions: frozenset[Partition]

    def __call__(self, partition: Partition) -> bool:
        return partition in self.partitions
