"""The batch driver on the in-memory source and sink: delivery before commit, pause and retry,
giving up, lost partitions, transactions, the model lane and the shutdown bound - no broker,
no Redis, each test well under a second."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from stream.context.errors import ContextUnavailable
from stream.kafka.clients import OutgoingMessage
from stream.kafka.errors import DeliveryFailed, FlushTimeout
from stream.pipeline.driver import BatchDriver, DriverLimits
from stream.pipeline.ends import Partition
from stream.pipeline.errors import CommitFailed, OwnershipLost, ShutdownIncomplete
from stream.pipeline.memory import InMemorySink, InMemorySource, Journal, Outputs, PlainSteps
from stream.pipeline.retry import Backoff, RetryPolicy

FAST = RetryPolicy(backoff=Backoff(first_s=0.01, max_s=0.04))
LIMITS = DriverLimits(max_records=10, wait_s=0.01, flush_slice_s=0.01, idle_slice_s=0.01)
P0: Partition = ("in", 0)
P1: Partition = ("in", 1)


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int


def records(partition: int, offsets: range) -> list[Rec]:
    return [Rec("in", partition, offset) for offset in offsets]


def echo(batch: list[Rec]) -> Outputs:
    """One output per record, naming it."""
    return Outputs([OutgoingMessage("out", f"{r.partition}@{r.offset}".encode()) for r in batch])


def values(sink: InMemorySink) -> list[str]:
    return [(m.value or b"").decode() for m in sink.delivered]


def driver(
    source: InMemorySource[Rec],
    sink: InMemorySink,
    process: Callable[[list[Rec]], Outputs] = echo,
    **kwargs: object,
) -> BatchDriver[Rec, list[Rec], None, Outputs]:
    options: dict[str, object] = {"limits": LIMITS, "policy": FAST, **kwargs}
    return BatchDriver(source, sink, PlainSteps(process), **options)  # type: ignore[arg-type]


def failing(
    times: int, error: Exception, then: Callable[[list[Rec]], Outputs] = echo
) -> tuple[Callable[[list[Rec]], Outputs], list[float]]:
    """``then``, failing with ``error`` on the first ``times`` calls; and when each call came."""
    calls: list[float] = []

    def process(batch: list[Rec]) -> Outputs:
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise error
        return then(batch)

    return process, calls


# -- delivery and commit ------------------------------------------------------------------------


def test_every_batch_is_delivered_before_its_offsets_are_committed() -> None:
    journal: Journal = []
    source = InMemorySource(records(0, range(15)) + records(1, range(5)), journal=journal)
    sink = InMemorySink(journal=journal)
    driver(source, sink).run()

    assert sorted(values(sink)) == sorted(
        [f"0@{o}" for o in range(15)] + [f"1@{o}" for o in range(5)]
    )
    assert source.committed == {P0: 15, P1: 5}
    # at-least-once: a commit only ever follows the delivery of the batch it commits
    kinds = [kind for kind, _ in journal]
    assert kinds == ["delivered", "commit"] * (len(kinds) // 2)
    assert len(kinds) // 2 == source.reads == 2  # 20 records, batches of at most 10


def test_records_of_partitions_not_owned_are_not_processed() -> None:
    source = InMemorySource(records(0, range(3)) + records(1, range(3)))
    source.revoke(P1)
    sink = InMemorySink()
    driver(source, sink).run()
    assert values(sink) == ["0@0", "0@1", "0@2"]
    assert source.committed == {P0: 3}


# -- retries ------------------------------------------------------------------------------------


def test_a_retriable_failure_pauses_the_partitions_and_retries_the_same_batch() -> None:
    journal: Journal = []
    source = InMemorySource(records(0, range(4)), journal=journal)
    sink = InMemorySink(journal=journal)
    process, calls = failing(2, ContextUnavailable("redis away"))
    retried: list[tuple[str, int]] = []
    driver(source, sink, process, on_retry=lambda s, _e, n: retried.append((s, n))).run()

    assert len(calls) == 3
    assert retried == [("deliver", 1), ("deliver", 2)]
    assert source.reads == 1, "the batch was read again instead of retried in hand"
    assert [kind for kind, _ in journal] == [
        "pause", "resume", "pause", "resume", "delivered", "commit",
    ]  # fmt: skip
    assert journal[0] == ("pause", [P0])
    assert values(sink) == ["0@0", "0@1", "0@2", "0@3"]
    assert source.committed == {P0: 4}


def test_retries_back_off_doubling_until_the_failure_passes() -> None:
    source = InMemorySource(records(0, range(2)))
    sink = InMemorySink()
    process, calls = failing(3, ContextUnavailable("redis away"))
    policy = RetryPolicy(backoff=Backoff(first_s=0.05, max_s=1.0))
    driver(source, sink, process, policy=policy).run()

    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert len(gaps) == 3
    for gap, delay in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        assert delay <= gap < delay + 0.15
    assert source.committed == {P0: 2}


def test_a_failure_that_cannot_pass_ends_the_run_with_nothing_delivered_or_committed() -> None:
    source = InMemorySource(records(0, range(3)))
    sink = InMemorySink()
    process, calls = failing(1, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        driver(source, sink, process).run()
    assert len(calls) == 1
    assert sink.delivered == []
    assert source.committed == {}


def test_a_bounded_policy_gives_up_after_its_attempts_and_surfaces_the_failure() -> None:
    source = InMemorySource(records(0, range(3)))
    sink = InMemorySink()
    process, calls = failing(99, ContextUnavailable("redis away for good"))
    policy = RetryPolicy(backoff=Backoff(first_s=0.001), max_attempts=3)
    with pytest.raises(ContextUnavailable, match="for good"):
        driver(source, sink, process, policy=policy).run()
    assert len(calls) == 3
    assert source.committed == {}


def test_a_refused_delivery_builds_and_produces_the_batch_again() -> None:
    source = InMemorySource(records(0, range(3)))
    sink = InMemorySink()
    sink.failures.append(DeliveryFailed(["out: broker refused"]))
    builds: list[int] = []

    def process(batch: list[Rec]) -> Outputs:
        builds.append(len(batch))
        return echo(batch)

    driver(source, sink, process).run()
    assert builds == [3, 3]
    assert values(sink) == ["0@0", "0@1", "0@2"]  # the refused attempt delivered nothing
    assert source.committed == {P0: 3}


def test_a_wait_for_acknowledgements_past_its_bound_fails_as_the_policy_says() -> None:
    source = InMemorySource(records(0, range(2)))
    sink = InMemorySink()
    sink.blocked.set()
    limits = DriverLimits(max_records=10, wait_s=0.01, flush_slice_s=0.02, flush_wait_s=0.1)
    no_flush_retry = RetryPolicy(
        retriable=tuple(e for e in FAST.retriable if e is not FlushTimeout),
        backoff=FAST.backoff,
    )
    started = time.monotonic()
    with pytest.raises(FlushTimeout):
        driver(source, sink, limits=limits, policy=no_flush_retry).run()
    assert 0.1 <= time.monotonic() - started < 1.0
    assert source.committed == {}


def test_a_failed_commit_is_retried_without_delivering_the_batch_again() -> None:
    source = InMemorySource(records(0, range(3)))
    source.commit_failures.extend([CommitFailed("coordinator away")] * 2)
    sink = InMemorySink()
    driver(source, sink).run()
    assert len(sink.delivered) == 3
    assert source.committed == {P0: 3}


def test_a_commit_refused_for_lost_ownership_is_not_retried() -> None:
    source = InMemorySource(records(0, range(3)) + records(0, range(3, 5)))
    source.commit_failures.append(OwnershipLost("rebalance in progress"))
    sink = InMemorySink()
    driver(source, sink, limits=DriverLimits(max_records=3, wait_s=0.01)).run()
    assert source.committed == {P0: 5}  # the first commit was skipped, the next one went in


# -- ownership ----------------------------------------------------------------------------------


def test_a_partition_lost_mid_batch_gets_none_of_its_outputs_delivered_or_committed() -> None:
    source = InMemorySource(records(0, range(3)) + records(1, range(3)))
    sink = InMemorySink()
    seen: list[list[str]] = []

    def process(batch: list[Rec]) -> Outputs:
        seen.append([f"{r.partition}@{r.offset}" for r in batch])
        source.revoke(P1)  # the group moves partition 1 on while the batch is processed
        return echo(batch)

    driver(source, sink, process).run()
    # built again without partition 1 once its loss was seen
    assert seen == [["0@0", "0@1", "0@2", "1@0", "1@1", "1@2"], ["0@0", "0@1", "0@2"]]
    assert values(sink) == ["0@0", "0@1", "0@2"]
    assert source.committed == {P0: 3}


def test_a_partition_lost_during_a_retry_wait_is_left_out_of_the_retried_batch() -> None:
    source = InMemorySource(records(0, range(2)) + records(1, range(2)))
    source.during_idle = lambda: source.revoke(P1)
    sink = InMemorySink()
    process, _ = failing(1, ContextUnavailable("redis away"))
    driver(source, sink, process).run()
    assert values(sink) == ["0@0", "0@1"]
    assert source.committed == {P0: 2}


def test_a_partition_revoked_during_a_retry_wait_and_assigned_back_after_it_is_read() -> None:
    # The broker restart of tests/reliability: the group lost the partitions while the
    # driver waited with them paused, and handed them back after the wait. The pause outlives
    # the revocation (as in librdkafka), so a driver resuming only what it owned when the
    # wait ended left them paused for good: nothing read, nothing logged.
    source = InMemorySource(records(0, range(2)) + records(1, range(2)))
    source.during_idle = lambda: source.revoke(P1)

    def assign_back(batch: list[Rec]) -> Outputs:
        if P1 not in source.assignment():
            source.assign(P1)
        return echo(batch)

    process, _ = failing(1, ContextUnavailable("redis away"), then=assign_back)
    sink = InMemorySink()
    running = driver(source, sink, process)
    guard = threading.Timer(5, running.request_stop)  # without the fix it never ends
    guard.start()
    try:
        running.run()
    finally:
        guard.cancel()
    assert sorted(values(sink)) == ["0@0", "0@1", "1@0", "1@1"]
    assert source.committed == {P0: 2, P1: 2}
    assert not source.paused


def test_a_partition_that_comes_back_is_read_again_rather_than_committed_from_old_work() -> None:
    source = InMemorySource(records(0, range(2)) + records(1, range(2)))
    sink = InMemorySink()
    calls = 0

    def process(batch: list[Rec]) -> Outputs:
        nonlocal calls
        calls += 1
        if calls == 1:  # revoked and assigned straight back: a new generation
            source.revoke(P1)
            source.assign(P1)
        return echo(batch)

    driver(source, sink, process).run()
    # partition 1's records went out once, read again under its new generation
    assert sorted(values(sink)) == ["0@0", "0@1", "1@0", "1@1"]
    assert source.reads == 2
    assert source.committed == {P0: 2, P1: 2}


# -- transactions -------------------------------------------------------------------------------


def test_a_transactional_sink_commits_outputs_and_offsets_together_and_retries_aborts() -> None:
    journal: Journal = []
    source = InMemorySource(records(0, range(3)), journal=journal)
    sink = InMemorySink(transactional=True, journal=journal)
    sink.failures.append(DeliveryFailed(["transaction aborted: coordinator moved"]))
    driver(source, sink).run()

    assert sink.aborted == 1
    assert values(sink) == ["0@0", "0@1", "0@2"]
    assert source.committed == {P0: 3}
    # the offsets went with the transaction, never through the source
    assert [kind for kind, _ in journal if kind != "pause" and kind != "resume"] == [
        "delivered", "transaction",
    ]  # fmt: skip


# -- the model lane -----------------------------------------------------------------------------


class LaneSteps:
    """Prepare / score / finish with the model call on the lane; records what ran when."""

    def __init__(self, fail_finish: int = 0) -> None:
        self.log: list[str] = []
        self.prepared = 0
        self._fail_finish = fail_finish

    def prepare(self, batch: list[Rec], meanwhile: Callable[[], None]) -> list[Rec]:
        self.prepared += 1
        self.log.append(f"prepare {batch[0].offset}")
        meanwhile()
        return batch

    def score(self, prepared: list[Rec]) -> list[int]:
        return [r.offset * 10 for r in prepared]

    def finish(
        self, prepared: list[Rec], scores: list[int], keep: Callable[[Partition], bool]
    ) -> Outputs:
        if self._fail_finish:
            self._fail_finish -= 1
            raise ContextUnavailable("redis away")
        self.log.append(f"finish {prepared[0].offset}")
        return Outputs([OutgoingMessage("out", str(s).encode()) for s in scores])

    def done(self, batch: list[Rec], prepared: list[Rec], finished: Outputs) -> None:
        self.log.append(f"done {batch[0].offset}")


def lane_driver(
    source: InMemorySource[Rec], sink: InMemorySink, steps: LaneSteps, **kwargs: object
) -> BatchDriver[Rec, list[Rec], list[int], Outputs]:
    options: dict[str, object] = {
        "limits": DriverLimits(max_records=2, wait_s=0.01, flush_slice_s=0.01),
        "policy": FAST,
        "overlap": True,
        **kwargs,
    }
    return BatchDriver(source, sink, steps, **options)  # type: ignore[arg-type]


def test_with_the_lane_batches_are_scored_ahead_and_delivered_in_order() -> None:
    source = InMemorySource(records(0, range(6)))
    sink = InMemorySink()
    steps = LaneSteps()
    lane_driver(source, sink, steps).run()
    assert values(sink) == ["0", "10", "20", "30", "40", "50"]
    assert source.committed == {P0: 6}
    # batch n+1 is prepared before batch n is finished
    assert steps.log.index("prepare 2") < steps.log.index("finish 0")
    assert steps.log.index("prepare 4") < steps.log.index("finish 2")


def test_a_lane_batch_that_cannot_be_delivered_fails_the_run_not_the_next_batch() -> None:
    # The lane's batch is finished from inside the next batch's prepare (``meanwhile``);
    # its failure must end the run, not be retried as the next batch's (dropping it).
    source = InMemorySource(records(0, range(6)))
    sink = InMemorySink()
    steps = LaneSteps(fail_finish=99)
    policy = RetryPolicy(backoff=Backoff(first_s=0.001), max_attempts=2)
    with pytest.raises(ContextUnavailable):
        lane_driver(source, sink, steps, policy=policy).run()
    assert steps.prepared <= 2  # no prepare was retried for the lane batch's failure
    assert sink.delivered == []
    assert source.committed == {}


# -- prefetch: batch n+1 begun before batch n is completed ---------------------------------------


class PrefetchSteps(LaneSteps):
    """``LaneSteps`` whose prepare also comes in two halves (``SplitPrepare``); the first
    ``fail_complete`` completions raise ``error``."""

    def __init__(self, fail_complete: int = 0, error: Exception | None = None) -> None:
        super().__init__()
        self._fail_complete = fail_complete
        self._error = error or ContextUnavailable("redis away")
        self.on_begin: Callable[[], None] = lambda: None

    def begin(self, batch: list[Rec]) -> list[Rec]:
        self.log.append(f"begin {batch[0].offset}")
        self.on_begin()
        return batch

    def complete(self, begun: list[Rec]) -> list[Rec]:
        if self._fail_complete:
            self._fail_complete -= 1
            self.log.append(f"failed {begun[0].offset}")
            raise self._error
        self.log.append(f"complete {begun[0].offset}")
        return begun


def prefetch_driver(
    source: InMemorySource[Rec], sink: InMemorySink, steps: PrefetchSteps, **kwargs: object
) -> BatchDriver[Rec, list[Rec], list[int], Outputs]:
    return lane_driver(source, sink, steps, prefetch=steps, **kwargs)


def test_with_prefetch_the_next_batch_is_begun_before_this_one_is_completed() -> None:
    source = InMemorySource(records(0, range(6)))
    sink = InMemorySink()
    steps = PrefetchSteps()
    prefetch_driver(source, sink, steps).run()
    assert values(sink) == ["0", "10", "20", "30", "40", "50"]
    assert source.committed == {P0: 6}
    log = steps.log
    assert log.index("begin 2") < log.index("complete 0")
    assert log.index("begin 4") < log.index("complete 2")
    assert not any(entry.startswith("prepare") for entry in log)  # the halves, not the whole


def test_a_failed_completion_is_retried_before_the_batch_begun_after_it() -> None:
    # What was begun after the failed batch is discarded and begun again once the failed one
    # is through: its I/O never lands before the retry's (the context store refuses it).
    source = InMemorySource(records(0, range(6)))
    sink = InMemorySink()
    steps = PrefetchSteps(fail_complete=1)
    prefetch_driver(source, sink, steps).run()
    assert values(sink) == ["0", "10", "20", "30", "40", "50"]  # each once, in order
    assert source.committed == {P0: 6}
    log = steps.log
    assert log[:3] == ["begin 0", "begin 2", "failed 0"]
    retried = log.index("prepare 0")
    assert log.index("complete 2") < retried  # discarded: completed only to be dropped
    assert log.index("begin 2", retried) > retried  # begun again after the retry
    assert log.count("begin 2") == 2
    assert log.index("finish 0") < log.index("finish 2")


def test_a_completion_that_cannot_be_retried_ends_the_run_uncommitted() -> None:
    source = InMemorySource(records(0, range(6)))
    sink = InMemorySink()
    steps = PrefetchSteps(fail_complete=1, error=ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        prefetch_driver(source, sink, steps).run()
    assert sink.delivered == []
    assert source.committed == {}


def test_a_stop_completes_and_delivers_the_batch_begun() -> None:
    source = InMemorySource(records(0, range(4)), bounded=False)
    sink = InMemorySink()
    steps = PrefetchSteps()
    the_driver = prefetch_driver(source, sink, steps)
    steps.on_begin = the_driver.request_stop  # the stop comes while a batch is begun
    the_driver.run()
    assert steps.log[:2] == ["begin 0", "complete 0"]
    assert values(sink) == ["0", "10"]
    assert source.committed == {P0: 2}


# -- stopping -----------------------------------------------------------------------------------


def run_in_thread(target: Callable[[], None]) -> tuple[threading.Thread, list[Exception]]:
    raised: list[Exception] = []

    def body() -> None:
        try:
            target()
        except Exception as exc:  # noqa: BLE001 - handed to the test, which asserts on it
            raised.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, raised


def test_a_stop_finishes_and_commits_the_batch_in_hand() -> None:
    source: InMemorySource[Rec] = InMemorySource(bounded=False)
    sink = InMemorySink()
    the_driver = driver(source, sink)
    thread, raised = run_in_thread(the_driver.run)
    source.append(records(0, range(5)))
    deadline = time.monotonic() + 5
    while source.committed != {P0: 5} and time.monotonic() < deadline:
        time.sleep(0.01)
    the_driver.request_stop()
    thread.join(5)
    assert not thread.is_alive()
    assert raised == []
    assert values(sink) == [f"0@{o}" for o in range(5)]


def test_a_stop_returns_within_the_shutdown_bound_while_the_broker_does_not_acknowledge() -> None:
    source = InMemorySource(records(0, range(3)), bounded=False)
    sink = InMemorySink()
    sink.blocked.set()  # every flush waits its slice and acknowledges nothing
    bound = 0.3
    limits = DriverLimits(max_records=10, wait_s=0.01, flush_slice_s=0.05, shutdown_s=bound)
    the_driver = driver(source, sink, limits=limits)
    thread, raised = run_in_thread(the_driver.run)
    deadline = time.monotonic() + 5
    while sink.flushes < 2 and time.monotonic() < deadline:
        time.sleep(0.01)

    asked = time.monotonic()
    the_driver.request_stop()
    thread.join(bound + 2)
    took = time.monotonic() - asked
    assert not thread.is_alive()
    assert bound <= took < bound + 0.5
    assert len(raised) == 1
    assert isinstance(raised[0], ShutdownIncomplete)
    assert source.committed == {}  # the unacknowledged batch is left to be reprocessed
    assert sink.delivered == []


def test_retries_stop_at_the_shutdown_bound_too() -> None:
    source = InMemorySource(records(0, range(3)), bounded=False)
    sink = InMemorySink()
    process, _ = failing(10_000, ContextUnavailable("redis away"))
    limits = DriverLimits(max_records=10, wait_s=0.01, idle_slice_s=0.01, shutdown_s=0.2)
    policy = RetryPolicy(backoff=Backoff(first_s=0.05, max_s=5.0))
    the_driver = driver(source, sink, process, limits=limits, policy=policy)
    thread, raised = run_in_thread(the_driver.run)
    time.sleep(0.3)  # into the backoff; waits now exceed the bound
    asked = time.monotonic()
    the_driver.request_stop()
    thread.join(3)
    assert not thread.is_alive()
    assert time.monotonic() - asked < 0.2 + 0.3
    assert len(raised) == 1
    assert isinstance(raised[0], ShutdownIncomplete)
    assert source.committed == {}
