"""The batch driver's hooks and its early-closing reads, on the in-memory ends: what a worker
is told before and after each read, at each slice of a wait, around each stage and at each
commit; and that a read closes as soon as the model lane comes free."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from stream.context.errors import ContextUnavailable
from stream.pipeline.driver import BatchDriver, DriverLimits, Hooks
from stream.pipeline.memory import InMemorySink, InMemorySource, Outputs, PlainSteps
from stream.pipeline.retry import Backoff, RetryPolicy

from .test_driver import FAST, LIMITS, P0, LaneSteps, Rec, echo, failing, records


class Recorder(Hooks[Rec]):
    """Every hook call, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_read(self) -> None:
        self.calls.append("before_read")

    def after_read(self, records: list[Rec]) -> None:
        self.calls.append(f"after_read {len(records)}")

    def waiting(self) -> None:
        self.calls.append("waiting")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.calls.append(f"{name} start")
        yield
        self.calls.append(f"{name} end")

    def committed(self) -> None:
        self.calls.append("committed")


def plain_driver(
    source: InMemorySource[Rec],
    sink: InMemorySink,
    hooks: Hooks[Rec],
    process: Callable[[list[Rec]], Outputs] = echo,
) -> BatchDriver[Rec, list[Rec], None, Outputs]:
    return BatchDriver(source, sink, PlainSteps(process), limits=LIMITS, policy=FAST, hooks=hooks)


def test_a_batch_is_read_delivered_and_committed_inside_the_hooks_in_order() -> None:
    source = InMemorySource(records(0, range(3)))
    hooks = Recorder()
    plain_driver(source, InMemorySink(), hooks).run()
    assert hooks.calls == [
        "before_read", "read start", "read end", "after_read 3",
        "produce start", "produce end", "commit start", "committed", "commit end",
    ]  # fmt: skip


def test_a_transaction_is_one_stage_and_one_commit() -> None:
    source = InMemorySource(records(0, range(3)))
    hooks = Recorder()
    plain_driver(source, InMemorySink(transactional=True), hooks).run()
    assert hooks.calls == [
        "before_read", "read start", "read end", "after_read 3",
        "transaction start", "transaction end", "committed",
    ]  # fmt: skip
    assert source.committed == {P0: 3}


def test_every_slice_of_a_retry_wait_is_reported() -> None:
    source = InMemorySource(records(0, range(3)))
    hooks = Recorder()
    process, _ = failing(1, ContextUnavailable("redis away"))
    plain_driver(source, InMemorySink(), hooks, process).run()
    # backoff 0.01 s in slices of at most 0.01 s: at least one report before the retry
    first_wait = hooks.calls.index("waiting")
    assert hooks.calls.index("produce start") > first_wait
    assert "committed" in hooks.calls


def test_a_hook_that_raises_ends_the_run_with_nothing_committed() -> None:
    class Fatal(Exception):
        pass

    class Refusing(Hooks[Rec]):
        def after_read(self, records: list[Rec]) -> None:
            if records:
                raise Fatal("the broker refused our credentials")

    source = InMemorySource(records(0, range(3)))
    sink = InMemorySink()
    with pytest.raises(Fatal):
        plain_driver(source, sink, Refusing()).run()
    assert sink.delivered == []
    assert source.committed == {}


def test_a_hook_raising_while_waiting_ends_a_retry_loop() -> None:
    class Fatal(Exception):
        pass

    class Refusing(Hooks[Rec]):
        def waiting(self) -> None:
            raise Fatal("client failed")

    source = InMemorySource(records(0, range(3)))
    process, calls = failing(10_000, ContextUnavailable("redis away"))
    with pytest.raises(Fatal):
        plain_driver(source, InMemorySink(), Refusing(), process).run()
    assert len(calls) == 1
    assert source.paused == set(), "the partitions were resumed on the way out"


# -- reads that close early ---------------------------------------------------------------------


def test_a_read_gets_an_until_only_while_a_batch_is_in_the_lane() -> None:
    source = InMemorySource(records(0, range(4)))
    steps = LaneSteps()
    driver: BatchDriver[Rec, list[Rec], list[int], Outputs] = BatchDriver(
        source,
        InMemorySink(),
        steps,
        limits=DriverLimits(max_records=2, wait_s=0.01, flush_slice_s=0.01),
        policy=FAST,
        overlap=True,
    )
    driver.run()
    assert source.untils[0] is None, "the lane is empty before the first batch"
    assert all(until is not None for until in source.untils[1:])
    last = source.untils[-1]
    assert last is not None
    assert last(), "the lane came free: the read may close"


class SlowLaneSteps(LaneSteps):
    """The model takes ``model_s`` per batch."""

    def __init__(self, model_s: float) -> None:
        super().__init__()
        self._model_s = model_s

    def score(self, prepared: list[Rec]) -> list[int]:
        time.sleep(self._model_s)
        return super().score(prepared)


def test_an_empty_read_ends_when_the_lane_comes_free_not_after_its_wait() -> None:
    # One batch, then nothing: the read that waits for more would hold the scored batch
    # (and its events) for the whole wait; it ends when the model is done instead.
    source: InMemorySource[Rec] = InMemorySource(records(0, range(2)), bounded=False)
    sink = InMemorySink()
    steps = SlowLaneSteps(model_s=0.05)
    driver: BatchDriver[Rec, list[Rec], list[int], Outputs] = BatchDriver(
        source,
        sink,
        steps,
        limits=DriverLimits(max_records=2, wait_s=5.0, flush_slice_s=0.01),
        policy=RetryPolicy(backoff=Backoff(first_s=0.01)),
        overlap=True,
    )
    thread = threading.Thread(target=driver.run, daemon=True)
    started = time.monotonic()
    thread.start()
    deadline = started + 3
    while sink.delivered == [] and time.monotonic() < deadline:
        time.sleep(0.005)
    took = time.monotonic() - started
    driver.request_stop()
    source.append(records(0, range(2, 3)))  # ends the read now waiting with the lane empty
    thread.join(3)
    assert not thread.is_alive()
    assert [m.value for m in sink.delivered][:2] == [b"0", b"10"]
    assert took < 1.0, f"the scored batch waited {took:.2f}s for a read to time out"
