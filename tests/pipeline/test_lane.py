"""The model lane on its own: order, overlap and failures, without a model or a broker."""

from __future__ import annotations

import threading

import pytest

from stream.pipeline.lane import ModelLane


def test_each_push_returns_the_batch_before_it_with_its_scores_in_order() -> None:
    lane: ModelLane[int, int] = ModelLane(lambda batch: batch * 10)
    try:
        results = [lane.push(batch) for batch in (1, 2, 3)]
        results.append(lane.push(None))
        assert results == [None, (1, 10), (2, 20), (3, 30)]
        assert lane.push(None) is None  # empty again
    finally:
        lane.close()


def test_the_next_batch_is_scored_while_the_caller_finishes_the_previous_one() -> None:
    # The caller's thread gets batch 1 back only once batch 2 has started on the worker:
    # batch 2's model call is running while batch 1 is finished.
    started: dict[int, threading.Event] = {1: threading.Event(), 2: threading.Event()}
    release = threading.Event()

    def score(batch: int) -> int:
        started[batch].set()
        if batch == 2:
            assert release.wait(10)
        return -batch

    lane: ModelLane[int, int] = ModelLane(score)
    try:
        assert lane.push(1) is None
        assert lane.push(2) == (1, -1)
        assert started[2].wait(10), "batch 2 did not start while batch 1 was handed back"
        busy = lane.busy
        assert busy is not None
        assert not busy.done()
        release.set()
        assert lane.push(None) == (2, -2)
        assert lane.busy is None
    finally:
        release.set()
        lane.close()


def test_a_failing_model_call_is_raised_to_the_caller_and_the_next_batch_is_not_started() -> None:
    scored: list[int] = []

    def score(batch: int) -> int:
        scored.append(batch)
        if batch == 1:
            raise RuntimeError("model bug")
        return batch

    lane: ModelLane[int, int] = ModelLane(score)
    try:
        lane.push(1)
        with pytest.raises(RuntimeError, match="model bug"):
            lane.push(2)
        assert scored == [1]
        assert lane.busy is None
    finally:
        lane.close()


def test_close_waits_for_the_running_call_and_drops_the_held_batch() -> None:
    finished = threading.Event()

    def score(batch: int) -> int:
        finished.wait(0.2)
        finished.set()
        return batch

    lane: ModelLane[int, int] = ModelLane(score)
    lane.push(7)
    lane.close()
    assert finished.is_set()
    assert lane.busy is None


def test_take_if_done_hands_back_a_finished_batch_only() -> None:
    release = threading.Event()

    def score(batch: int) -> int:
        assert release.wait(10)
        return batch + 100

    lane: ModelLane[int, int] = ModelLane(score)
    try:
        assert lane.take_if_done() is None  # empty
        lane.push(1)
        assert lane.take_if_done() is None  # still scoring
        release.set()
        busy = lane.busy
        assert busy is not None
        busy.result(10)
        assert lane.take_if_done() == (1, 101)
        assert lane.busy is None
        assert lane.push(None) is None  # taken: nothing left to hand back
    finally:
        release.set()
        lane.close()
